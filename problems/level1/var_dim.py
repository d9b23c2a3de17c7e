"""Unbiased variance of each row, y[i] = sum_j (x[i, j] - mean_i)^2 / (cols - 1), x
[rows, cols] fp32, y [rows] fp32. Rows have a large mean (|mean| up to ~150) and a small
spread, as activations with outlier offsets do: the one-pass E[x^2] - E[x]^2 formula loses
3-4 digits in fp32 and fails; use two passes or Welford/Chan merging.
H100 estimate: 2.1 GB read once -> ~0.7 ms at ~3 TB/s.
Measured: 0.91 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

rows = 32768
cols = 16384

KBENCH = {
    "dtype": "float32",
    # Two-pass or Welford fp32 agree with torch to ~1e-6 relative; the naive one-pass formula
    # is off by ~1e-3 relative at these offsets. rtol 1e-4 separates the two.
    "atol": 1e-5,
    "rtol": 1e-4,
    "shapes": {"odd": {"rows": 4093, "cols": 100003}},
    "cpu_shapes": {"small": {"rows": 16, "cols": 1024}, "odd": {"rows": 9, "cols": 1001}},
    "flops": lambda s: 3 * s["rows"] * s["cols"],
    "bytes": lambda s: 4 * (s["rows"] * s["cols"] + s["rows"]),
    "tags": ["reduction", "numerics", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.var(x, dim=-1, correction=1)


def get_inputs():
    # x: [rows, cols] fp32; per-row offset ~ N(0, 50^2) and per-row scale in [0.5, 1.5]
    offset = torch.randn(rows, 1) * 50
    scale = torch.rand(rows, 1) + 0.5
    return [torch.randn(rows, cols).mul_(scale).add_(offset)]


def get_init_inputs():
    return []
