"""Row-wise L2 normalization, y = x / max(||x||_2, 1e-12) (torch.nn.functional.normalize,
p = 2 along the last dim), x and y [rows, dim] fp32 row-major: embedding normalization before
a cosine-similarity search. Rows have different scales (0.1 to 10.1).
H100 estimate: 1.07 GB read + 1.07 GB written -> ~0.7 ms at ~3 TB/s.
Measured: 1.3 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

rows = 65536
dim = 4096

KBENCH = {
    "dtype": "float32",
    # Outputs are ~dim^-1/2 = 0.016 in size; fp32 norms agree to ~1e-6 relative, so the test
    # is relative (rtol 1e-5) with a tiny atol. Returning x or zeros fails.
    "atol": 1e-6,
    "rtol": 1e-5,
    "shapes": {"odd": {"rows": 4093, "dim": 1000}, "wide": {"rows": 1024, "dim": 65537}},
    "cpu_shapes": {"small": {"rows": 16, "dim": 256}, "odd": {"rows": 7, "dim": 301}},
    "flops": lambda s: 3 * s["rows"] * s["dim"],
    "bytes": lambda s: 2 * 4 * s["rows"] * s["dim"],
    "tags": ["norm", "reduction", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, p=2.0, dim=-1)


def get_inputs():
    # x: [rows, dim] fp32, per-row scale in [0.1, 10.1]
    scale = torch.rand(rows, 1) * 10 + 0.1
    return [torch.randn(rows, dim).mul_(scale)]


def get_init_inputs():
    return []
