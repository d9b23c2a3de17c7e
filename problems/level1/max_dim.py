"""Column maxima of an fp32 matrix: y[j] = max_i x[i, j] (torch.amax over dim 0, values
only), x [rows, cols] row-major, y [cols]. The reduced dimension is the outer, strided one.
H100 estimate: 2.1 GB read once -> ~0.7 ms at ~3 TB/s.
Measured: 0.73 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

rows = 16384  # reduced dimension
cols = 32768

KBENCH = {
    "dtype": "float32",
    "atol": 0.0,  # a maximum is one of the inputs: exact in any order of evaluation
    "rtol": 0.0,
    "shapes": {"odd": {"rows": 4093, "cols": 100003}},
    "cpu_shapes": {"small": {"rows": 128, "cols": 64}, "odd": {"rows": 77, "cols": 45}},
    "flops": lambda s: s["rows"] * s["cols"],
    "bytes": lambda s: 4 * (s["rows"] * s["cols"] + s["cols"]),
    "tags": ["reduction", "strided", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(x, dim=0)


def get_inputs():
    # x: [rows, cols] fp32
    return [torch.randn(rows, cols)]


def get_init_inputs():
    return []
