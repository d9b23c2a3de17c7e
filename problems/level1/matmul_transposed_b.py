"""bf16 linear layer without bias, y = x @ W^T, with W stored as nn.Linear does: [N, K],
row-major, so the right operand is read transposed (both operands K-contiguous). The
Llama-3-8B gate/up projection over a prefill batch. x [M, K], W a bf16 parameter [N, K]
(Gaussian, std 1/sqrt(K), so y ~ N(0, 1)); y [M, N] bf16 with fp32 accumulation.
H100 estimate: 2*8192*4096*14336 = 962 GFLOP -> ~1.6 ms eager at ~600 TFLOP/s; 420 MB.
Measured: 1.3 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

M = 8192  # tokens
K = 4096  # hidden size
N = 14336  # MLP intermediate size

KBENCH = {
    "dtype": "bfloat16",
    # fp32 accumulation then one bf16 rounding (<= 2^-8 relative: rtol 2e-2 covers two ulps).
    # cuBLAS, which computes the reference, may reduce split-K partials in bf16: measured on an
    # H100 up to 0.026 absolute on these unit-scale outputs, hence atol 5e-2 (zeros still fail).
    "atol": 5e-2,
    "rtol": 2e-2,
    "shapes": {"odd": {"M": 2047, "K": 4093, "N": 1000}, "decode_batch": {"M": 32}},
    "cpu_shapes": {"small": {"M": 64, "K": 96, "N": 48}, "odd": {"M": 31, "K": 67, "N": 41}},
    "flops": lambda s: 2 * s["M"] * s["K"] * s["N"],
    "bytes": lambda s: 2 * (s["M"] * s["K"] + s["N"] * s["K"] + s["M"] * s["N"]),
    "tags": ["gemm", "transposed", "linear", "compute-bound", "bf16"],
}


class Model(nn.Module):
    def __init__(self, K: int, N: int):
        super().__init__()
        # weight: [N, K] bf16 (nn.Linear layout)
        self.weight = nn.Parameter((torch.randn(N, K) * K**-0.5).to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight)


def get_inputs():
    # x: [M, K] bf16
    return [torch.randn(M, K, dtype=torch.bfloat16)]


def get_init_inputs():
    return [K, N]
