"""fp32 product with a transposed left operand, C = A^T @ B: the weight-gradient GEMM
dW = X^T dY of a linear layer. A [K, M] and B [K, N] are row-major with the reduction (token)
dimension K outermost, so A is read column-wise; C [M, N] fp32. Strict-fp32 reference; the
tolerance accepts TF32 tensor-core kernels. B is scaled by 1/sqrt(K) so C ~ N(0, 1).
H100 estimate: 2*4096*4096*8192 = 275 GFLOP -> ~5.5 ms eager at ~50 TFLOP/s fp32; 340 MB.
Measured: 5.3 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

M = 4096
N = 4096
K = 8192  # tokens: the reduction dimension

KBENCH = {
    "dtype": "float32",
    # TF32 operands: ~3e-4 relative error per unit-scale output, ~2e-3 at the worst element.
    "atol": 1e-2,
    "rtol": 5e-3,
    "shapes": {"odd": {"M": 1000, "N": 4093, "K": 2047}},
    "cpu_shapes": {"small": {"M": 48, "N": 64, "K": 96}, "odd": {"M": 29, "N": 37, "K": 53}},
    "flops": lambda s: 2 * s["M"] * s["K"] * s["N"],
    "bytes": lambda s: 4 * (s["K"] * s["M"] + s["K"] * s["N"] + s["M"] * s["N"]),
    "tags": ["gemm", "transposed", "compute-bound", "tf32"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.matmul(A.t(), B)


def get_inputs():
    # A: [K, M], B: [K, N] fp32
    A = torch.randn(K, M)
    B = torch.randn(K, N) * K**-0.5
    return [A, B]


def get_init_inputs():
    return []
