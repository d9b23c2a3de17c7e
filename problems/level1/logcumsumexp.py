"""Inclusive log-cumulative-sum-exp along rows, y[i, j] = log sum_{k <= j} exp(x[i, k]), x and
y [rows, cols] fp32 row-major: the stable scan behind log-space recurrences (CTC, linear
attention / SSM normalizers). The scan's combine is (a, b) -> max + log(exp(a - max) +
exp(b - max)); exp without a running maximum overflows. Rows have different temperatures
(std 0.5 to 3.5) so late positions are not a function of j alone.
H100 estimate: 0.54 GB read + 0.54 GB written -> ~0.4 ms at 3 TB/s, ~1 ms eager.
Measured: 1.5 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

rows = 8192
cols = 16384

KBENCH = {
    "dtype": "float32",
    # Outputs are ~ -5 to 40; fp32 log-add-exp scans agree with torch to ~1e-6 relative;
    # rtol 1e-5 / atol 1e-4 leave ~10x. An exclusive scan fails at the early positions.
    "atol": 1e-4,
    "rtol": 1e-5,
    "shapes": {"odd": {"rows": 4093, "cols": 10007}},
    "cpu_shapes": {"small": {"rows": 16, "cols": 512}, "odd": {"rows": 7, "cols": 1001}},
    "flops": lambda s: 4 * s["rows"] * s["cols"],
    "bytes": lambda s: 2 * 4 * s["rows"] * s["cols"],
    "tags": ["scan", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logcumsumexp(x, dim=-1)


def get_inputs():
    # x: [rows, cols] fp32, per-row std in [0.5, 3.5]
    temperature = torch.rand(rows, 1) * 3 + 0.5
    return [torch.randn(rows, cols).mul_(temperature)]


def get_init_inputs():
    return []
