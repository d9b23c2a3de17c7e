"""Bias + GELU (tanh approximation), dropout-free: ``y = gelu_tanh(x + b)`` (Megatron's bias_gelu).

x: [M, N] bf16 (the output of a bias-free GEMM); b: [N] bf16 (std 0.5); y: [M, N] bf16.
``gelu_tanh(z) = 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))``. Eager runs the add (rounded to
bf16) and the GELU as two kernels; one read and one write is the floor.
Eager H100 estimate: 2 kernels x (537 MB read + 537 MB write) at ~3 TB/s = ~0.75 ms (measured 1.05 ms).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

M = 16384  # tokens
N = 16384  # FFN width (4 x 4096)

KBENCH = {
    "dtype": "bfloat16",
    # elementwise: eager rounds x + b to bf16 before the GELU, so ~1-2 bf16 ulps (2^-8 relative)
    # from a single-rounding kernel; 1e-2, zeros or x fail.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {"odd": {"M": 4093, "N": 11003}, "narrow": {"M": 65536, "N": 4096}},
    "cpu_shapes": {"small": {"M": 64, "N": 256}, "odd": {"M": 37, "N": 211}},
    "flops": lambda s: 10 * s["M"] * s["N"],
    "bytes": lambda s: 2 * (2 * s["M"] * s["N"] + s["N"]),
    "tags": ["elementwise", "gelu", "bias", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.bias = nn.Parameter((torch.randn(features) * 0.5).to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x + self.bias, approximate="tanh")


def get_inputs():
    # x: [M, N]
    return [torch.randn(M, N, dtype=torch.bfloat16)]


def get_init_inputs():
    return [N]
