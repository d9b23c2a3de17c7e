"""Inclusive prefix sum along rows, y[i, j] = sum_{k <= j} x[i, k], x and y [rows, cols] fp32
row-major. A scan: blocks of a row are scanned in parallel and their carries combined. Data is
zero-mean (a random walk, |y| up to ~500), which keeps fp32 scans well-conditioned.
H100 estimate: 1.07 GB read + 1.07 GB written -> ~0.7 ms at ~3 TB/s.
Measured: 1.2 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

rows = 16384
cols = 16384

KBENCH = {
    "dtype": "float32",
    # Outputs reach ~500; different scan orders in fp32 differ by ~1e-5 (even a sequential
    # scan by < 2e-3). An exclusive scan or a dropped carry is off by O(1) and fails.
    "atol": 5e-3,
    "rtol": 1e-5,
    "shapes": {"odd": {"rows": 4093, "cols": 100003}, "short_rows": {"rows": 1_000_000, "cols": 255}},
    "cpu_shapes": {"small": {"rows": 16, "cols": 1024}, "odd": {"rows": 7, "cols": 1001}},
    "flops": lambda s: s["rows"] * s["cols"],
    "bytes": lambda s: 2 * 4 * s["rows"] * s["cols"],
    "tags": ["scan", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=-1)


def get_inputs():
    # x: [rows, cols] fp32
    return [torch.randn(rows, cols)]


def get_init_inputs():
    return []
