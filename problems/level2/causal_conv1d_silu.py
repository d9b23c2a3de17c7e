"""Depthwise causal conv1d + SiLU (Mamba's short convolution): ``y = silu(causal_conv1d(x) + b)``.

x: [batch_size, dim, seqlen] bf16, channel-first and contiguous (the causal-conv1d package's
layout); weight: [dim, 1, kernel_size] (kernel_size 4), bias: [dim]; per channel c,
``y[b, c, t] = silu(bias[c] + sum_j weight[c, 0, j] * x[b, c, t - 3 + j])`` with x = 0 before t = 0
(left padding 3, right output trimmed). y: same shape as x, bf16. Accumulate in fp32.
Eager H100 estimate: cuDNN depthwise conv over 168 MB (padded output 168 MB) + slice + SiLU
~0.6 ms (Mamba-2.8B d_inner 5120, 8 x 2048 tokens; measured 1.1 ms).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

batch_size = 8
dim = 5120
seqlen = 2048
kernel_size = 4

KBENCH = {
    "dtype": "bfloat16",
    # a 4-term fp32 sum and a SiLU, rounded to bf16 once (eager may round the conv output first):
    # ~1-2 bf16 ulps; 1e-2, zeros or x fail.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {"odd": {"batch_size": 3, "dim": 2500, "seqlen": 4093}, "long": {"batch_size": 1, "seqlen": 16384}},
    "cpu_shapes": {"small": {"batch_size": 2, "dim": 64, "seqlen": 64}, "odd": {"batch_size": 1, "dim": 37, "seqlen": 101}},
    "flops": lambda s: 2 * s["batch_size"] * s["dim"] * s["seqlen"] * (s["kernel_size"] + 2),
    "bytes": lambda s: 2 * (2 * s["batch_size"] * s["dim"] * s["seqlen"] + s["dim"] * (s["kernel_size"] + 1)),
    "tags": ["conv", "depthwise", "causal", "silu", "mamba", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size, groups=dim, padding=kernel_size - 1, dtype=torch.bfloat16)
        with torch.no_grad():
            self.conv.bias.normal_(0.0, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.conv(x)[..., : x.shape[-1]])


def get_inputs():
    # x: [B, D, L]
    return [torch.randn(batch_size, dim, seqlen, dtype=torch.bfloat16)]


def get_init_inputs():
    return [dim, kernel_size]
