"""Causal GQA prefill over packed documents of random lengths (FlashAttention varlen layout):
a block-diagonal causal mask. q: [T, Hq, D]; k, v: [T, Hkv, D], the tokens of all documents
back to back; cu_seqlens: [num_docs + 1] int32, 0 = c_0 < c_1 < ... < c_N = T (random cut
points, every document at least 1 token, lengths mostly odd-sized). Token i of document n
(c_n <= i < c_{n+1}) sees keys c_n <= j <= i, never another document's. Query head h reads kv
head h // (Hq // Hkv); scale D**-0.5; fp32 softmax; output [T, Hq, D] bf16.
Eager on an H100: ~13 ms measured (512-query chunks over the packed sequence, keys from the
chunk's first document start); peak memory < 1 GB.
"""

import torch
import torch.nn as nn

from reference_ops.attention import varlen_causal

total_tokens = 8192
num_docs = 16
num_heads = 32
num_kv_heads = 8
head_dim = 128


def _min_pairs(s):
    # causal pairs summed over documents are smallest when all lengths are equal
    t, n = s["total_tokens"], s["num_docs"]
    return (t * t / n + t) / 2


KBENCH = {
    "dtype": "bfloat16",
    # a flash kernel with bf16 P lands ~2.5e-3 rel-L2, <= 0.3 of the elementwise bound;
    # moving one document boundary by a token is ~0.3 rel-L2 on small shapes
    "atol": 1e-2,
    "rtol": 2e-2,
    "shapes": {
        "odd": {"total_tokens": 6143, "num_docs": 7},
        "many_short": {"total_tokens": 16384, "num_docs": 128},
    },
    "cpu_shapes": {
        "small": {"total_tokens": 64, "num_docs": 3, "num_heads": 8, "num_kv_heads": 2},
        "odd": {"total_tokens": 77, "num_docs": 5, "num_heads": 4, "num_kv_heads": 1},
    },
    "flops": lambda s: 4 * s["num_heads"] * s["head_dim"] * _min_pairs(s),
    "bytes": lambda s: 2 * s["total_tokens"] * s["head_dim"]
    * (2 * s["num_heads"] + 2 * s["num_kv_heads"]) + 4 * (s["num_docs"] + 1),
    "fixed": ["num_heads", "num_kv_heads", "head_dim"],
    "tags": ["attention", "prefill", "varlen", "packed", "gqa", "causal", "ragged"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, q, k, v, cu_seqlens):
        return varlen_causal(q, k, v, cu_seqlens).to(q.dtype)


def get_inputs():
    # q: [T, Hq, D]; k, v: [T, Hkv, D]
    q = torch.randn(total_tokens, num_heads, head_dim, dtype=torch.bfloat16)
    k = torch.randn(total_tokens, num_kv_heads, head_dim, dtype=torch.bfloat16)
    v = torch.randn(total_tokens, num_kv_heads, head_dim, dtype=torch.bfloat16)
    # cu_seqlens: [num_docs + 1], num_docs - 1 distinct random cut points in (0, T)
    cuts = torch.randperm(total_tokens - 1)[: num_docs - 1] + 1
    zero = torch.zeros(1, dtype=cuts.dtype)
    end = torch.full((1,), total_tokens, dtype=cuts.dtype)
    cu_seqlens = torch.cat([zero, cuts.sort().values, end]).to(torch.int32)
    return [q, k, v, cu_seqlens]


def get_init_inputs():
    return []
