"""Out-of-place 2-D transpose, y = x.T made contiguous: x [rows, cols] fp32 row-major, y
[cols, rows] fp32 row-major. Pure data movement (zero FLOPs): a kernel stages tiles through
shared memory so that both the reads and the writes are coalesced. The output must be a new
tensor with the transposed values; returning a strided view of x is not a kernel.
H100 estimate: 1.07 GB read + 1.07 GB written -> ~0.7 ms at ~3 TB/s.
Measured: 2.3 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

rows = 16384
cols = 16384

KBENCH = {
    "dtype": "float32",
    "atol": 0.0,  # values are copied, not computed
    "rtol": 0.0,
    "shapes": {"odd": {"rows": 4093, "cols": 14339}, "tall": {"rows": 1_000_003, "cols": 129}},
    "cpu_shapes": {"small": {"rows": 64, "cols": 96}, "odd": {"rows": 37, "cols": 53}},
    "flops": 0,
    "bytes": lambda s: 2 * 4 * s["rows"] * s["cols"],
    "tags": ["data-movement", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.t().contiguous()


def get_inputs():
    # x: [rows, cols] fp32
    return [torch.randn(rows, cols)]


def get_init_inputs():
    return []
