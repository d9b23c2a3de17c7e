"""Rectangular bf16 matrix product C = A @ B with fp32 accumulation: the down-projection of
a Llama-3-8B MLP over a prefill batch. Row-major A [M, K] (activations) and B [K, N]
(weights, K-major as stored by x @ W); C [M, N] bf16. B is scaled by 1/sqrt(K) so C ~ N(0, 1).
H100 estimate: 2*4096*14336*4096 = 481 GFLOP -> ~0.8 ms eager at ~600 TFLOP/s; 270 MB.
Measured: 0.61 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

M = 4096  # tokens
K = 14336  # MLP intermediate size
N = 4096  # hidden size

KBENCH = {
    "dtype": "bfloat16",
    # fp32 accumulation then one bf16 rounding (<= 2^-8 relative: rtol 2e-2 covers two ulps).
    # cuBLAS, which computes the reference, may reduce split-K partials in bf16: measured on an
    # H100 up to 0.026 absolute on these unit-scale outputs, hence atol 5e-2 (zeros still fail).
    "atol": 5e-2,
    "rtol": 2e-2,
    "shapes": {"odd": {"M": 1000, "K": 4093, "N": 2047}, "decode_batch": {"M": 64}},
    "cpu_shapes": {"small": {"M": 64, "K": 96, "N": 48}, "odd": {"M": 33, "K": 71, "N": 29}},
    "flops": lambda s: 2 * s["M"] * s["K"] * s["N"],
    "bytes": lambda s: 2 * (s["M"] * s["K"] + s["K"] * s["N"] + s["M"] * s["N"]),
    "tags": ["gemm", "compute-bound", "bf16"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.matmul(A, B)


def get_inputs():
    # A: [M, K] bf16, B: [K, N] bf16
    A = torch.randn(M, K, dtype=torch.bfloat16)
    B = torch.randn(K, N, dtype=torch.bfloat16).mul_(K**-0.5)
    return [A, B]


def get_init_inputs():
    return []
