"""Depthwise 2-D convolution (groups = channels), 3x3, stride 1, padding 1, with bias (a
MobileNetV2 block), NCHW fp32: x [batch_size, channels, height, width], weight
[channels, 1, 3, 3], bias [channels], y of x's shape. Nine multiply-adds per output: no GEMM,
memory-bound; zero padding at the borders.
H100 estimate: 0.62 GB read + 0.62 GB written -> ~0.4 ms at 3 TB/s, ~1 ms eager (PyTorch's
native depthwise kernel).
Measured: 1.5 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

batch_size = 64
channels = 192
height = 112
width = 112
kernel_size = 3

KBENCH = {
    "dtype": "float32",
    # Nine fp32 products and a bias per output: orders of evaluation differ by ~1e-7 on outputs
    # of std ~0.6 (no tensor cores are involved; a TF32 path would be a precision downgrade).
    "atol": 1e-4,
    "rtol": 1e-4,
    "shapes": {"odd": {"batch_size": 5, "channels": 97, "height": 111, "width": 75}},
    "cpu_shapes": {"small": {"batch_size": 2, "channels": 8, "height": 12, "width": 12},
                   "odd": {"batch_size": 1, "channels": 5, "height": 9, "width": 7}},
    "flops": lambda s: 2 * 9 * s["batch_size"] * s["channels"] * s["height"] * s["width"],
    "bytes": lambda s: 4 * (2 * s["batch_size"] * s["channels"] * s["height"] * s["width"]
                            + 10 * s["channels"]),
    "tags": ["conv", "depthwise", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size, stride=1, padding=1,
                              groups=channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def get_inputs():
    # x: [batch_size, channels, height, width] fp32
    return [torch.randn(batch_size, channels, height, width)]


def get_init_inputs():
    return [channels]
