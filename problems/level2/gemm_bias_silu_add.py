"""GEMM + bias + SiLU + residual add: ``y = residual + silu(x @ W^T + b)``.

x: [M, K] bf16; W: [N, K] (nn.Linear layout), b: [N] (std 0.5, so it matters); residual: [M, N]
bf16; y: [M, N] bf16. The whole epilogue (bias, SiLU, residual read, add) belongs in the GEMM's
epilogue on the fp32 accumulator; eager rounds to bf16 after the GEMM, after SiLU and after the add.
Eager H100 estimate: 550 GFLOP bf16 GEMM ~0.9 ms + SiLU and add passes over 134 MB tensors ~0.25 ms
= ~1.2 ms (measured 0.96 ms).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

M = 8192  # tokens
K = 4096  # in features
N = 8192  # out features

KBENCH = {
    "dtype": "bfloat16",
    # bf16 output after a K-term GEMM and two eager roundings (SiLU, add): eager lands up to
    # ~1.6e-2 (abs) from an fp64 computation on |y| ~ 1-3; 3e-2, zeros or the residual fail.
    "atol": 3e-2,
    "rtol": 3e-2,
    "shapes": {"odd": {"M": 4093, "K": 4096, "N": 5001}},
    "cpu_shapes": {"small": {"M": 64, "K": 128, "N": 64}, "odd": {"M": 33, "K": 96, "N": 47}},
    "flops": lambda s: 2 * s["M"] * s["N"] * s["K"],
    "bytes": lambda s: 2 * (s["M"] * s["K"] + s["N"] * s["K"] + s["N"] + 2 * s["M"] * s["N"]),
    "tags": ["gemm", "epilogue", "silu", "residual", "compute-bound"],
}


class Model(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, dtype=torch.bfloat16)
        with torch.no_grad():  # unit-variance outputs; a bias large enough that dropping it fails
            self.linear.weight.normal_(0.0, in_features**-0.5)
            self.linear.bias.normal_(0.0, 0.5)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return residual + F.silu(self.linear(x))


def get_inputs():
    # x: [M, K]; residual: [M, N]
    return [torch.randn(M, K, dtype=torch.bfloat16), torch.randn(M, N, dtype=torch.bfloat16)]


def get_init_inputs():
    return [K, N]
