"""GroupNorm with 32 groups and affine weight/bias (torch.nn.GroupNorm, eps 1e-5) over an
NCHW fp32 feature map [batch_size, channels, height, width], as in a diffusion UNet block.
Each group normalizes channels/32 consecutive channels over all of H x W (biased variance);
the per-channel affine follows. Channel count is fixed (it must stay divisible by 32).
H100 estimate: 0.54 GB read (twice: statistics, then apply) + 0.54 GB written -> ~0.6 ms.
Measured: 0.75 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

batch_size = 16
channels = 512
height = 128
width = 128
num_groups = 32
eps = 1e-5

KBENCH = {
    "dtype": "float32",
    # Group statistics over up to 262k elements in fp32: tree or Welford sums agree with torch
    # to ~1e-6 relative on O(1) outputs; 1e-4 leaves ~100x.
    "atol": 1e-4,
    "rtol": 1e-4,
    "fixed": ["channels", "num_groups"],
    "shapes": {"odd": {"batch_size": 3, "height": 127, "width": 93}},
    "cpu_shapes": {"small": {"batch_size": 2, "channels": 64, "height": 8, "width": 8},
                   "odd": {"batch_size": 3, "channels": 32, "height": 7, "width": 5}},
    "flops": lambda s: 8 * s["batch_size"] * s["channels"] * s["height"] * s["width"],
    "bytes": lambda s: 4 * (2 * s["batch_size"] * s["channels"] * s["height"] * s["width"]
                            + 2 * s["channels"]),
    "tags": ["norm", "reduction", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self, channels: int, num_groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, channels, eps=eps)
        with torch.no_grad():
            self.norm.weight.copy_(1 + 0.1 * torch.randn(channels))
            self.norm.bias.copy_(0.1 * torch.randn(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def get_inputs():
    # x: [batch_size, channels, height, width] fp32, per-channel offset and scale
    offset = torch.randn(1, channels, 1, 1)
    scale = torch.rand(1, channels, 1, 1) + 0.5
    return [torch.randn(batch_size, channels, height, width).mul_(scale).add_(offset)]


def get_init_inputs():
    return [channels, num_groups]
