"""Softmax over the last dim of bf16 rows of moderate width (attention-score-like rows of
8192 keys): y = exp(x - max) / sum exp(x - max), x and y [rows, cols] bf16. PyTorch computes
it in fp32 internally and rounds once to bf16; a row fits in shared memory / registers, so
one pass per row is possible. Rows have different temperatures (std 0.5 to 3.5).
H100 estimate: 1.07 GB read + 1.07 GB written -> ~0.7 ms at ~3 TB/s.
Measured: 2.1 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

rows = 65536
cols = 8192

KBENCH = {
    "dtype": "bfloat16",
    # fp32 math then one bf16 rounding: <= 1 ulp (< 7.9e-3 relative). Probabilities go down to
    # ~1e-10, but bf16 keeps fp32's exponent range, so the check is relative: atol only 1e-6.
    "atol": 1e-6,
    "rtol": 1e-2,
    "shapes": {"odd": {"rows": 4093, "cols": 8191}, "long_rows": {"rows": 1000, "cols": 65537}},
    "cpu_shapes": {"small": {"rows": 16, "cols": 512}, "odd": {"rows": 7, "cols": 1001}},
    "flops": lambda s: 5 * s["rows"] * s["cols"],
    "bytes": lambda s: 2 * 2 * s["rows"] * s["cols"],
    "tags": ["softmax", "reduction", "memory-bound", "bf16"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=-1)


def get_inputs():
    # x: [rows, cols] bf16 scores, per-row std in [0.5, 3.5]
    temperature = torch.rand(rows, 1) * 3 + 0.5
    return [torch.randn(rows, cols).mul_(temperature).to(torch.bfloat16)]


def get_init_inputs():
    return []
