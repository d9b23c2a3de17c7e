"""Mean over the middle dimension of an fp32 tensor: y[b, c] = mean_r x[b, r, c], x
[batch_size, R, C] row-major, y [batch_size, C]. A strided reduction: the reduced dimension is
not contiguous, so a kernel reduces across rows of a tile while reading contiguous columns.
H100 estimate: 2.1 GB read once -> ~0.7 ms at ~3 TB/s.
Measured: 0.73 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

batch_size = 16
R = 4096  # reduced dimension
C = 8192

KBENCH = {
    "dtype": "float32",
    # Means of 4096 unit-variance terms are ~0.016; fp32 summation-order differences are
    # ~1e-8 absolute, so atol 1e-6 / rtol 1e-5 leave ~100x. Zeros fail the relative L2 test.
    "atol": 1e-6,
    "rtol": 1e-5,
    "shapes": {"odd": {"batch_size": 3, "R": 4093, "C": 10007}},
    "cpu_shapes": {"small": {"batch_size": 2, "R": 64, "C": 96},
                   "odd": {"batch_size": 3, "R": 37, "C": 61}},
    "flops": lambda s: s["batch_size"] * s["R"] * s["C"],
    "bytes": lambda s: 4 * s["batch_size"] * (s["R"] * s["C"] + s["C"]),
    "tags": ["reduction", "strided", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mean(x, dim=1)


def get_inputs():
    # x: [batch_size, R, C] fp32
    return [torch.randn(batch_size, R, C)]


def get_init_inputs():
    return []
