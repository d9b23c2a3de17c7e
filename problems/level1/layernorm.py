"""LayerNorm over the last dim with affine weight and bias (torch.nn.LayerNorm, eps 1e-5),
x and y [tokens, hidden] fp32 row-major; biased variance (divide by hidden). Inputs carry
per-row offsets and scales as a residual stream does, so mean and variance both matter;
weight ~ 1 + 0.1 N(0, 1) and bias ~ 0.1 N(0, 1) are parameters built in __init__.
H100 estimate: 1.07 GB read + 1.07 GB written -> ~0.7 ms at ~3 TB/s.
Measured: 1.1 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

tokens = 32768
hidden = 8192  # Llama-3-70B hidden size
eps = 1e-5

KBENCH = {
    "dtype": "float32",
    # fp32 mean/variance (two-pass or Welford) agree with torch to ~1e-6 relative on O(1)
    # outputs; 1e-4 leaves ~100x, while returning x or zeros fails by O(1).
    "atol": 1e-4,
    "rtol": 1e-4,
    "shapes": {"odd": {"tokens": 4093, "hidden": 5120 + 3}, "wide": {"tokens": 1000, "hidden": 65537}},
    "cpu_shapes": {"small": {"tokens": 16, "hidden": 512}, "odd": {"tokens": 7, "hidden": 1001}},
    "flops": lambda s: 8 * s["tokens"] * s["hidden"],
    "bytes": lambda s: 4 * (2 * s["tokens"] * s["hidden"] + 2 * s["hidden"]),
    "tags": ["norm", "reduction", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, eps=eps)
        with torch.no_grad():
            self.norm.weight.copy_(1 + 0.1 * torch.randn(hidden))
            self.norm.bias.copy_(0.1 * torch.randn(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def get_inputs():
    # x: [tokens, hidden] fp32, per-row offset ~ N(0, 1) and scale in [0.5, 2.5]
    offset = torch.randn(tokens, 1)
    scale = torch.rand(tokens, 1) * 2 + 0.5
    return [torch.randn(tokens, hidden).mul_(scale).add_(offset)]


def get_init_inputs():
    return [hidden]
