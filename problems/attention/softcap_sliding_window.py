"""Gemma-2 style local attention prefill: causal sliding window plus logit softcapping.
q: [B, Hq, S, D]; k, v: [B, Hkv, S, D] (GQA: query head h reads kv head h // (Hq // Hkv)).
logits = softcap * tanh((q . k) * D**-0.5 / softcap); query i sees keys i - window < j <= i
(``window`` keys including itself, FlashAttention ``window_size=(window - 1, 0)``); fp32
softmax; output [B, Hq, S, D] bf16. Inputs are scaled so that logits reach ~+-30 and the cap
matters (dropping it changes the output far beyond the tolerance).
Eager on an H100: ~10 ms measured (the reference loops over 1024-query chunks, scores
[B, Hq, 1024, <= 2047] fp32 per chunk); peak memory ~1.3 GB.
"""

import torch
import torch.nn as nn

from reference_ops.attention import softcap_sliding_window

batch_size = 1
seq_len = 4096
num_heads = 32
num_kv_heads = 8
head_dim = 128
window_size = 1024
softcap = 50.0
logit_std = 8.0  # std of the scaled logits before capping (q scaled by it, k ~ N(0, 1))


def _pairs(s):
    # (query, key) pairs inside the causal window
    n, w = s["seq_len"], min(s["window_size"], s["seq_len"])
    return w * (w + 1) // 2 + (n - w) * w


KBENCH = {
    "dtype": "bfloat16",
    # logits up to ~30 make outputs sensitive to tanh accuracy: a hardware tanh.approx (rel
    # err <= 5e-4) with bf16 P reaches ~0.05 absolute and ~4e-3 rel-L2, hence atol 6e-2;
    # dropping the cap is ~0.11 rel-L2 and >10x the elementwise bound, dropping the window ~0.8
    "atol": 6e-2,
    "rtol": 2e-2,
    "shapes": {
        "odd": {"batch_size": 2, "seq_len": 3001},
        "long": {"batch_size": 1, "seq_len": 8192},
    },
    "cpu_shapes": {
        "small": {"batch_size": 1, "seq_len": 64, "num_heads": 4, "num_kv_heads": 2,
                  "window_size": 16},
        "odd": {"batch_size": 2, "seq_len": 45, "num_heads": 4, "num_kv_heads": 1,
                "window_size": 13},
    },
    "flops": lambda s: 4 * s["batch_size"] * s["num_heads"] * s["head_dim"] * _pairs(s),
    "bytes": lambda s: 2 * s["batch_size"] * s["seq_len"] * s["head_dim"]
    * (2 * s["num_heads"] + 2 * s["num_kv_heads"]),
    "fixed": ["num_heads", "num_kv_heads", "head_dim", "window_size"],
    "tags": ["attention", "prefill", "sliding-window", "softcap", "gqa", "causal"],
}


class Model(nn.Module):
    def __init__(self, window_size: int, softcap: float):
        super().__init__()
        self.window_size = window_size
        self.softcap = softcap

    def forward(self, q, k, v):
        return softcap_sliding_window(q, k, v, self.window_size, self.softcap).to(q.dtype)


def get_inputs():
    # q: [B, Hq, S, D]; k, v: [B, Hkv, S, D]
    q = (torch.randn(batch_size, num_heads, seq_len, head_dim) * logit_std).to(torch.bfloat16)
    k = torch.randn(batch_size, num_kv_heads, seq_len, head_dim, dtype=torch.bfloat16)
    v = torch.randn(batch_size, num_kv_heads, seq_len, head_dim, dtype=torch.bfloat16)
    return [q, k, v]


def get_init_inputs():
    return [window_size, softcap]
