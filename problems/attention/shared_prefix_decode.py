"""GQA decode with a shared prefix (cascade inference / Hydragen): every sequence of the batch
continues one common prompt. q: [B, Hq, D] (one new token per sequence); k_prefix, v_prefix:
[Hkv, P, D], stored once for the whole batch; k_suffix, v_suffix: [B, Hkv, S, D], each
sequence's own tokens. The output must equal full attention of each query over
concat(prefix, suffix_b) along the sequence (one softmax over P + S keys; merging per-part
results by log-sum-exp is the intended trick). Query head h reads kv head h // (Hq // Hkv);
scale D**-0.5; fp32 softmax; output [B, Hq, D] bf16. The minimum traffic reads the prefix once.
Eager on an H100: ~2.2 ms measured (fp32 copies of the suffix KV dominate); peak memory ~1 GB.
"""

import torch
import torch.nn as nn

from reference_ops.attention import shared_prefix_decode

batch_size = 64
prefix_len = 16384
suffix_len = 1024
num_heads = 32
num_kv_heads = 8
head_dim = 128

KBENCH = {
    "dtype": "bfloat16",
    # a split-KV kernel with bf16 P lands ~2.5e-3 rel-L2; dropping the suffix is ~0.25
    "atol": 1e-2,
    "rtol": 2e-2,
    "shapes": {
        "odd": {"batch_size": 13, "prefix_len": 8191, "suffix_len": 257},
        "wide": {"batch_size": 256, "prefix_len": 8192, "suffix_len": 256},
    },
    "cpu_shapes": {
        "small": {"batch_size": 3, "prefix_len": 48, "suffix_len": 16, "num_heads": 8,
                  "num_kv_heads": 2},
        "odd": {"batch_size": 5, "prefix_len": 37, "suffix_len": 11, "num_heads": 4,
                "num_kv_heads": 1},
    },
    "flops": lambda s: 4 * s["batch_size"] * s["num_heads"] * s["head_dim"]
    * (s["prefix_len"] + s["suffix_len"]),
    "bytes": lambda s: 2 * s["head_dim"] * (
        2 * s["num_kv_heads"] * s["prefix_len"]  # shared K, V read once
        + 2 * s["batch_size"] * s["num_kv_heads"] * s["suffix_len"]
        + 2 * s["batch_size"] * s["num_heads"]  # q in, out
    ),
    "fixed": ["num_heads", "num_kv_heads", "head_dim"],
    "tags": ["attention", "decode", "shared-prefix", "cascade", "gqa", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, q, k_prefix, v_prefix, k_suffix, v_suffix):
        return shared_prefix_decode(q, k_prefix, v_prefix, k_suffix, v_suffix).to(q.dtype)


def get_inputs():
    # q: [B, Hq, D]; k/v_prefix: [Hkv, P, D]; k/v_suffix: [B, Hkv, S, D]
    q = torch.randn(batch_size, num_heads, head_dim, dtype=torch.bfloat16)
    k_prefix = torch.randn(num_kv_heads, prefix_len, head_dim, dtype=torch.bfloat16)
    v_prefix = torch.randn(num_kv_heads, prefix_len, head_dim, dtype=torch.bfloat16)
    k_suffix = torch.randn(batch_size, num_kv_heads, suffix_len, head_dim, dtype=torch.bfloat16)
    v_suffix = torch.randn(batch_size, num_kv_heads, suffix_len, head_dim, dtype=torch.bfloat16)
    return [q, k_prefix, v_prefix, k_suffix, v_suffix]


def get_init_inputs():
    return []
