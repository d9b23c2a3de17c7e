"""GEMM + per-channel scale + clamp: ``y = clamp((x @ W^T) * scale, -1, 1)`` in fp16.

x: [M, K] fp16; W: [N, K] fp16 (Gaussian, std K^-0.5, so x @ W^T has unit variance); scale: [N]
fp16 in [0.5, 1.5]; y: [M, N] fp16 with about a third of the entries saturated at +-1 (clip
value 1.0). As eager computes it: the GEMM output is rounded to fp16, multiplied by the scale
(rounded again), then clamped. Scale and clamp belong in the GEMM epilogue.
Eager H100 estimate: 550 GFLOP fp16 GEMM ~0.9 ms + scale and clamp passes over 134 MB ~0.2 ms
= ~1.1 ms (measured 1.03 ms).
"""

import torch
import torch.nn as nn

M = 8192
K = 4096
N = 8192
clip = 1.0

KBENCH = {
    "dtype": "float16",
    # fp16 (2^-11 relative) after a K-term GEMM and one eager re-rounding; outputs are in [-1, 1]:
    # 5e-3 is several ulps, zeros or an unclamped output fail.
    "atol": 5e-3,
    "rtol": 5e-3,
    "shapes": {"odd": {"M": 1000, "K": 4000, "N": 5003}, "square": {"M": 4096, "K": 8192, "N": 4096}},
    "cpu_shapes": {"small": {"M": 64, "K": 128, "N": 96}, "odd": {"M": 37, "K": 80, "N": 53}},
    "flops": lambda s: 2 * s["M"] * s["N"] * s["K"],
    "bytes": lambda s: 2 * (s["M"] * s["K"] + s["N"] * s["K"] + s["N"] + s["M"] * s["N"]),
    "tags": ["gemm", "epilogue", "clamp", "fp16", "compute-bound"],
}


class Model(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features).mul_(in_features**-0.5).half())
        self.scale = nn.Parameter((torch.rand(out_features) + 0.5).half())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.matmul(x, self.weight.t()) * self.scale, -clip, clip)


def get_inputs():
    # x: [M, K]
    return [torch.randn(M, K, dtype=torch.float16)]


def get_init_inputs():
    return [K, N]
