"""Gated delta rule (Gated DeltaNet / Qwen3-Next linear-attention core), to be computed in
chunks. q, k: [B, T, H, Dk]; v: [B, T, H, Dv]; g: [B, T, H] log decay (<= 0); beta: [B, T, H]
in (0, 1); all bf16 (FLA's [B, T, H, D] layout). With q and k L2-normalised over Dk in fp32:
  S_t = exp(g_t) S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T,  S_0 = 0,  S: [Dv, Dk]
  o_t = S_t q_t * Dk**-0.5
The reference is this sequential recurrence in fp32 (reference_ops/attention_linear.py);
a chunked (WY / UT-transform) kernel agrees with it up to rounding. Output [B, T, H, Dv] bf16.
Eager on an H100: ~14 ms measured: the reference is launch-bound at 4 small kernels (~56 us)
per token whatever the batch, so T is kept short here (a chunked kernel is 100x+ faster);
peak memory < 0.3 GB.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from reference_ops.attention_linear import gated_delta_rule

batch_size = 8
seq_len = 256
num_heads = 16
head_dim = 128  # Dk = Dv

KBENCH = {
    "dtype": "bfloat16",
    # outputs have std ~0.02 (unit q scaled by Dk**-0.5); a chunked (C=64) kernel with bf16
    # operands and an fp32 state lands ~4e-3 rel-L2, max abs err ~5e-4
    "atol": 2e-3,
    "rtol": 2e-2,
    "shapes": {
        "odd": {"batch_size": 3, "seq_len": 333},
        "long": {"batch_size": 2, "seq_len": 384},
    },
    "cpu_shapes": {
        "small": {"batch_size": 1, "seq_len": 64, "num_heads": 2},
        "odd": {"batch_size": 2, "seq_len": 37, "num_heads": 1},
    },
    # per token and head: S k, the rank-1 update and S q, 2 Dk Dv each
    "flops": lambda s: 6 * s["batch_size"] * s["seq_len"] * s["num_heads"] * s["head_dim"] ** 2,
    "bytes": lambda s: 2 * s["batch_size"] * s["seq_len"] * s["num_heads"]
    * (4 * s["head_dim"] + 2),
    "fixed": ["num_heads", "head_dim"],
    "tags": ["attention", "linear-attention", "deltanet", "gated-delta-rule", "recurrent",
             "causal"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, q, k, v, g, beta):
        return gated_delta_rule(q, k, v, g, beta).to(q.dtype)


def get_inputs():
    # q, k, v: [B, T, H, D]; g, beta: [B, T, H]
    shape = (batch_size, seq_len, num_heads, head_dim)
    q = torch.randn(shape, dtype=torch.bfloat16)
    k = torch.randn(shape, dtype=torch.bfloat16)
    v = torch.randn(shape, dtype=torch.bfloat16)
    # decay exp(g) ~ 0.9 .. 1 (memory of tens to hundreds of tokens), as trained models show
    g = F.logsigmoid(torch.randn(batch_size, seq_len, num_heads) + 4.0).to(torch.bfloat16)
    beta = torch.rand(batch_size, seq_len, num_heads).to(torch.bfloat16)
    return [q, k, v, g, beta]


def get_init_inputs():
    return []
