"""Square fp16 matrix product C = A @ B (compute-bound)."""

import torch
import torch.nn as nn

N = 8192

KBENCH = {
    "dtype": "float16",
    # fp32 accumulation and one rounding to fp16 (2^-11 relative). B is scaled so C ~ N(0, 1),
    # which keeps accumulation-order differences (cuBLAS may reduce split-K partials in fp16,
    # ~1e-3 absolute) well inside atol.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {"odd": {"N": 4093}, "n2048": {"N": 2048}},
    "cpu_shapes": {"small": {"N": 64}, "odd": {"N": 37}},
    "flops": lambda s: 2 * s["N"] ** 3,
    "bytes": lambda s: 3 * 2 * s["N"] ** 2,
    "tags": ["gemm", "compute-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.matmul(A, B)


def get_inputs():
    # A: [N, N], B: [N, N], fp16; B scaled by 1/sqrt(N) so that C ~ N(0, 1)
    A = torch.randn(N, N, dtype=torch.float16)
    B = torch.randn(N, N, dtype=torch.float16) * N**-0.5
    return [A, B]


def get_init_inputs():
    return []
