"""Causal grouped-query attention over a prompt (prefill) with Llama-3-8B's heads: 32 query
heads share 8 kv heads (groups of 4), head dim 128, bf16."""

import torch
import torch.nn as nn

from reference_ops.gqa_causal_prefill import gqa_causal_prefill

batch_size = 4
seq_len = 4096
n_heads = 32
n_kv_heads = 8
head_dim = 128


def _causal_pairs(s):
    return s["seq_len"] * (s["seq_len"] + 1) // 2  # (query, key) pairs left by the mask


KBENCH = {
    "dtype": "bfloat16",
    # Outputs are weighted means of v: std ~0.1, ~0.03 for late queries, O(1) for the first
    # few (which average a handful of v rows). Kernels keep scores and the softmax in fp32 but
    # feed P to the second matmul in bf16, as flash attention does: on early rows that is up to
    # ~5e-3 absolute against fp64 where outputs cancel to near zero, hence atol 1e-2; rtol
    # 2e-2 covers one bf16 ulp of O(1) outputs. The relative L2 bound (2e-2) is what catches
    # partial work: skipping one key block moves late outputs by ~10% of their size.
    "atol": 1e-2,
    "rtol": 2e-2,
    "shapes": {
        "odd": {"batch_size": 2, "seq_len": 4093},
        "long": {"batch_size": 1, "seq_len": 16384},
    },
    "cpu_shapes": {
        "small": {"batch_size": 2, "seq_len": 64, "n_heads": 4, "n_kv_heads": 1},
        "odd": {"batch_size": 1, "seq_len": 37, "n_heads": 8, "n_kv_heads": 2},
    },
    "flops": lambda s: 4 * s["batch_size"] * s["n_heads"] * s["head_dim"] * _causal_pairs(s),
    "bytes": lambda s: 2 * s["batch_size"] * s["seq_len"] * s["head_dim"]
    * (2 * s["n_heads"] + 2 * s["n_kv_heads"]),  # q, o, k, v in bf16
    "tags": ["attention", "gqa", "causal", "prefill", "compute-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return gqa_causal_prefill(q, k, v)


def get_inputs():
    # q: [B, Hq, S, D]; k, v: [B, Hkv, S, D]; bf16
    q = torch.randn(batch_size, n_heads, seq_len, head_dim, dtype=torch.bfloat16)
    k = torch.randn(batch_size, n_kv_heads, seq_len, head_dim, dtype=torch.bfloat16)
    v = torch.randn(batch_size, n_kv_heads, seq_len, head_dim, dtype=torch.bfloat16)
    return [q, k, v]


def get_init_inputs():
    return []
