"""Conv2d 3x3 + GroupNorm + SiLU: ``y = silu(group_norm(conv(x)))``, a diffusion-UNet unit.

x: [batch_size, channels, height, width] fp16, NCHW contiguous (SDXL's 320-channel level at a
1024 px image's 128 x 128 latent); conv 3x3, stride 1, padding 1, with bias; GroupNorm with 32
groups over (channels/32, height, width) per sample, affine, eps 1e-5, statistics in fp32;
y: same shape, fp16. The group statistics need the whole conv output of a (sample, group) before
any output is written: a two-phase or split reduction.
Eager H100 estimate: 242 GFLOP fp16 conv ~0.6 ms + GroupNorm and SiLU over 84 MB ~0.15 ms = ~0.8 ms (measured 1.04 ms).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

batch_size = 8
channels = 320
height = 128
width = 128
num_groups = 32
kernel_size = 3

KBENCH = {
    "dtype": "float16",
    # fp16 output of a 2880-term conv then a normalization to unit scale: eager rounds the conv
    # output to fp16 first (~1e-3 relative); 1e-2 covers that, zeros or x fail.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {"odd": {"batch_size": 3, "height": 97, "width": 75}, "mid": {"channels": 640, "height": 64, "width": 64}},
    "cpu_shapes": {
        "small": {"batch_size": 2, "channels": 32, "height": 12, "width": 12, "num_groups": 8},
        "odd": {"batch_size": 1, "channels": 24, "height": 9, "width": 13, "num_groups": 4},
    },
    "flops": lambda s: 2 * s["batch_size"] * s["channels"] ** 2 * s["height"] * s["width"] * 9,
    "bytes": lambda s: 2 * (2 * s["batch_size"] * s["channels"] * s["height"] * s["width"]
                            + 9 * s["channels"] ** 2 + 3 * s["channels"]),
    "fixed": ["channels"],  # must stay a multiple of num_groups
    "tags": ["conv", "groupnorm", "silu", "diffusion", "vision"],
}


class Model(nn.Module):
    def __init__(self, channels: int, num_groups: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=1)
        self.norm = nn.GroupNorm(num_groups, channels, eps=1e-5)
        with torch.no_grad():
            self.conv.bias.normal_(0.0, 0.5)
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.normal_(0.0, 0.5)
        self.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.norm(self.conv(x)))


def get_inputs():
    # x: [N, C, H, W]
    return [torch.randn(batch_size, channels, height, width, dtype=torch.float16)]


def get_init_inputs():
    return [channels, num_groups]
