"""Row sums of an fp32 matrix: y[i] = sum_j x[i, j], x [rows, cols] row-major, y [rows] fp32.
A contiguous (last-dim) reduction; each row is 64 KB at the main shape, so one program per
row (or a split row with a second pass) is the natural kernel.
H100 estimate: 2.1 GB read once -> ~0.7 ms at ~3 TB/s.
Measured: 0.7 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

rows = 32768
cols = 16384

KBENCH = {
    "dtype": "float32",
    # Sums of 16k unit-variance terms have magnitude ~128; reordering the fp32 sum moves the
    # result by ~1e-5 (even a sequential sum by < 5e-3), so atol 1e-2 is ~1e-4 of the scale.
    "atol": 1e-2,
    "rtol": 1e-5,
    "shapes": {"odd": {"rows": 4093, "cols": 100003}, "short_rows": {"rows": 1_000_000, "cols": 257}},
    "cpu_shapes": {"small": {"rows": 16, "cols": 1024}, "odd": {"rows": 9, "cols": 1001}},
    "flops": lambda s: s["rows"] * s["cols"],
    "bytes": lambda s: 4 * (s["rows"] * s["cols"] + s["rows"]),
    "tags": ["reduction", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sum(x, dim=-1)


def get_inputs():
    # x: [rows, cols] fp32
    return [torch.randn(rows, cols)]


def get_init_inputs():
    return []
