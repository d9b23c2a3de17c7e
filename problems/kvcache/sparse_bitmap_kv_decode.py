"""Bitmap-sparse KV-cache decode attention (Mustafar style): 50% unstructured per-token sparsity.

q: [B, Hq, D] bf16 (one new token; GQA: query head h reads KV head h // (Hq / Hkv)).
Each cached key row (and value row) of D = 128 channels keeps its nnz = 64 largest-magnitude
entries: k_bitmap [B, Hkv, S, D/8] uint8 (channel 8i + j is kept iff bit j of byte i is set;
exactly nnz bits per row) and k_vals [B, Hkv, S, nnz] bf16 (the kept entries in increasing
channel order: the r-th set bit takes k_vals[..., r]); pruned entries are 0. Same for v_bitmap,
v_vals. out = softmax(q K^T / sqrt(D)) V over all S tokens with the decompressed K and V, fp32
inside, cast to bf16: [B, Hq, D]. Main shape: 16 sequences of 4k context, Llama-3-8B heads;
memory-bound on 2 x (67 MB values + 8 MB bitmaps). Eager H100: 11.5 ms measured (the fp32/int64
cumsum-gather decompression dominates), 1.6 GB peak.
"""

import torch
import torch.nn as nn

from reference_ops.kvcache_attention import decode_attention, salient_qk
from reference_ops.kvcache_formats import bitmap_densify, sparsify_rows

batch_size = 16
seq_len = 4096
n_heads = 32
n_kv_heads = 8
head_dim = 128
nnz = 64  # kept entries per row (50% sparsity)

KBENCH = {
    "dtype": "bfloat16",
    # bf16 output (mean |out| ~ 0.03, max ~ 0.3) of an fp32 softmax-weighted sum: the decompressed
    # values are exact; bf16 SDPA on them (H100) lands at rel-L2 2e-3, max err 2e-3 (one bf16 ulp
    # at 0.3); bf16's 2e-2 relative with a 1e-3 floor; rel-L2 2e-2 rejects zeros/a misplaced value.
    "atol": 1e-3,
    "rtol": 2e-2,
    "shapes": {
        "odd": {"batch_size": 5, "seq_len": 4093},
        "long": {"batch_size": 1, "seq_len": 65536},
    },
    "cpu_shapes": {
        "small": {"batch_size": 2, "seq_len": 128, "n_heads": 4, "n_kv_heads": 2, "head_dim": 32, "nnz": 16},
        "odd": {"batch_size": 1, "seq_len": 77, "n_heads": 6, "n_kv_heads": 3, "head_dim": 24, "nnz": 12},
    },
    "flops": lambda s: 4 * s["batch_size"] * s["n_heads"] * s["seq_len"] * s["head_dim"],
    # q, out; per cached row (K and V): D/8 bitmap bytes + nnz bf16 values
    "bytes": lambda s: (4 * s["batch_size"] * s["n_heads"] * s["head_dim"]
                        + 2 * s["batch_size"] * s["n_kv_heads"] * s["seq_len"] * (s["head_dim"] // 8 + 2 * s["nnz"])),
    "fixed": ["n_heads", "n_kv_heads", "head_dim", "nnz"],
    "tags": ["kvcache", "sparse", "bitmap", "mustafar", "decode", "attention", "gqa", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, q, k_bitmap, k_vals, v_bitmap, v_vals):
        k = bitmap_densify(k_bitmap, k_vals)  # [B, Hkv, S, D] fp32
        v = bitmap_densify(v_bitmap, v_vals)
        return decode_attention(q, k, v)[0].to(q.dtype)


def get_inputs():
    # q: [B, Hq, D]; dense Gaussian K (with a per-token salience all heads see) and V, pruned
    # to nnz entries per row.
    q, k = salient_qk(batch_size, n_heads, n_kv_heads, 1, seq_len, head_dim)
    v = torch.randn(batch_size, n_kv_heads, seq_len, head_dim, dtype=torch.bfloat16)
    k_bitmap, k_vals = sparsify_rows(k, nnz)
    v_bitmap, v_vals = sparsify_rows(v, nnz)
    return [q.squeeze(2), k_bitmap, k_vals, v_bitmap, v_vals]


def get_init_inputs():
    return []
