"""Batched fp32 matrix product C[b] = A[b] @ B[b] (torch.bmm), row-major A [batch, M, K] and
B [batch, K, N]. Strict-fp32 reference; the tolerance accepts TF32 tensor-core kernels.
B is scaled by 1/sqrt(K) so C ~ N(0, 1).
H100 estimate: 2*16*1024*2048*1024 = 69 GFLOP -> ~1.4 ms eager at ~50 TFLOP/s fp32; 470 MB.
Measured: 1.4 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

batch_size = 16
M = 1024
K = 2048
N = 1024

KBENCH = {
    "dtype": "float32",
    # TF32 operands: ~3e-4 relative error per unit-scale output, ~2e-3 at the worst element.
    "atol": 1e-2,
    "rtol": 5e-3,
    "shapes": {"odd": {"batch_size": 7, "M": 1000, "K": 4093, "N": 777}},
    "cpu_shapes": {"small": {"batch_size": 3, "M": 32, "K": 64, "N": 48},
                   "odd": {"batch_size": 2, "M": 17, "K": 41, "N": 23}},
    "flops": lambda s: 2 * s["batch_size"] * s["M"] * s["K"] * s["N"],
    "bytes": lambda s: 4 * s["batch_size"] * (s["M"] * s["K"] + s["K"] * s["N"] + s["M"] * s["N"]),
    "tags": ["gemm", "batched", "compute-bound", "tf32"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.bmm(A, B)


def get_inputs():
    # A: [batch_size, M, K], B: [batch_size, K, N] fp32
    A = torch.randn(batch_size, M, K)
    B = torch.randn(batch_size, K, N) * K**-0.5
    return [A, B]


def get_init_inputs():
    return []
