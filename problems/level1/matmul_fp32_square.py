"""Square fp32 matrix product C = A @ B, row-major A [N, N] and B [N, N]. The reference is
strict fp32 (cuBLAS SGEMM; torch leaves TF32 off for matmul); the tolerance also accepts
TF32 tensor-core kernels (Triton's tl.dot default), which round A and B to 10 mantissa
bits before fp32 accumulation. B is scaled by 1/sqrt(N) so C ~ N(0, 1).
H100 estimate: 2*4096^3 = 137 GFLOP -> ~2.8 ms eager at ~50 TFLOP/s strict fp32; 200 MB.
Measured: 2.7 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

N = 4096

KBENCH = {
    "dtype": "float32",
    # TF32 operands (unit roundoff 2^-11) give ~3e-4 relative error per output, i.e. ~2e-3
    # absolute at the worst of 16M unit-scale outputs; atol 1e-2 leaves 5x. Zeros fail (rel L2 1).
    "atol": 1e-2,
    "rtol": 5e-3,
    "shapes": {"odd": {"N": 4093}, "n2048": {"N": 2048}},
    "cpu_shapes": {"small": {"N": 64}, "odd": {"N": 45}},
    "flops": lambda s: 2 * s["N"] ** 3,
    "bytes": lambda s: 3 * 4 * s["N"] ** 2,
    "tags": ["gemm", "compute-bound", "tf32"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.matmul(A, B)


def get_inputs():
    # A: [N, N], B: [N, N] fp32
    A = torch.randn(N, N)
    B = torch.randn(N, N) * N**-0.5
    return [A, B]


def get_init_inputs():
    return []
