"""Causal GQA prefill with ALiBi position biases (Press et al.; BLOOM / MPT style).
q: [B, Hq, S, D]; k, v: [B, Hkv, S, D] (query head h reads kv head h // (Hq // Hkv));
slopes: a [Hq] fp32 buffer of the model, 2**(-8 (h + 1) / Hq) (0.84 down to 0.0039 for 32
heads; steep heads are nearly local, shallow ones see the whole context).
logits[i, j] = (q_i . k_j) * D**-0.5 - slopes[h] * (i - j) for j <= i, masked above the
diagonal; fp32 softmax (adding slopes[h] * j instead is the same softmax); output
[B, Hq, S, D] bf16.
Eager on an H100: ~14 ms measured (1024-query chunks, scores up to [B, Hq, 1024, S] fp32);
peak memory ~3 GB.
"""

import torch
import torch.nn as nn

from reference_ops.attention import alibi_causal, alibi_slopes

batch_size = 1
seq_len = 4096
num_heads = 32
num_kv_heads = 8
head_dim = 128

KBENCH = {
    "dtype": "bfloat16",
    # a flash kernel (fp32 scores and softmax, bf16 P, fp32 accumulation) lands ~2.7e-3 rel-L2
    # and <= 0.3 of the elementwise bound (one bf16 ulp of O(1) early-row outputs); dropping
    # the bias is ~1.0 rel-L2
    "atol": 1e-2,
    "rtol": 2e-2,
    "shapes": {
        "odd": {"batch_size": 3, "seq_len": 2047},
        "batched": {"batch_size": 4, "seq_len": 2048},
    },
    "cpu_shapes": {
        "small": {"batch_size": 1, "seq_len": 64, "num_heads": 8, "num_kv_heads": 2},
        "odd": {"batch_size": 2, "seq_len": 37, "num_heads": 4, "num_kv_heads": 1},
    },
    "flops": lambda s: 4 * s["batch_size"] * s["num_heads"] * s["head_dim"]
    * s["seq_len"] * (s["seq_len"] + 1) // 2,
    "bytes": lambda s: 2 * s["batch_size"] * s["seq_len"] * s["head_dim"]
    * (2 * s["num_heads"] + 2 * s["num_kv_heads"]) + 4 * s["num_heads"],
    "fixed": ["num_heads", "num_kv_heads", "head_dim"],
    "tags": ["attention", "prefill", "alibi", "position-bias", "gqa", "causal"],
}


class Model(nn.Module):
    def __init__(self, num_heads: int):
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(num_heads))  # [Hq] fp32

    def forward(self, q, k, v):
        return alibi_causal(q, k, v, self.slopes).to(q.dtype)


def get_inputs():
    # q: [B, Hq, S, D]; k, v: [B, Hkv, S, D]
    q = torch.randn(batch_size, num_heads, seq_len, head_dim, dtype=torch.bfloat16)
    k = torch.randn(batch_size, num_kv_heads, seq_len, head_dim, dtype=torch.bfloat16)
    v = torch.randn(batch_size, num_kv_heads, seq_len, head_dim, dtype=torch.bfloat16)
    return [q, k, v]


def get_init_inputs():
    return [num_heads]
