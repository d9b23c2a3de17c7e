"""Square-ish fp32 matmul C = A @ B (compute-bound; the vendor path is cuBLAS).

Test fixture for the policy corpus (vendor-library attacks and an honest Triton matmul).
"""

import torch
import torch.nn as nn

M = 1024
K = 1024
N = 1024

KBENCH = {
    "dtype": "float32",
    # tl.dot on fp32 inputs uses TF32 on NVIDIA GPUs by default; cuBLAS in the reference does not.
    "atol": 1e-2,
    "rtol": 1e-2,
    "cpu_shapes": {"small": {"M": 32, "K": 48, "N": 40}, "odd": {"M": 17, "K": 33, "N": 9}},
    "flops": lambda s: 2 * s["M"] * s["K"] * s["N"],
    "bytes": lambda s: 4 * (s["M"] * s["K"] + s["K"] * s["N"] + s["M"] * s["N"]),
    "tags": ["matmul", "compute-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)


def get_inputs():
    # a: [M, K], b: [K, N]
    return [torch.randn(M, K), torch.randn(K, N)]


def get_init_inputs():
    return []
