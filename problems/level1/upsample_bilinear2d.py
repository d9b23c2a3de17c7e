"""2x bilinear upsampling with align_corners=False (torch.nn.functional.interpolate,
scale_factor=2, mode "bilinear"), NCHW fp32: x [batch_size, channels, height, width] ->
y [batch_size, channels, 2*height, 2*width]. Output pixel (i, j) samples the input at
((i + 0.5)/2 - 0.5, (j + 0.5)/2 - 0.5), clamped at 0 from below; at the far edge the
neighbour index is clamped to the last row/column. Weights are 1/4 and 3/4.
H100 estimate: 0.27 GB read + 1.07 GB written -> ~0.45 ms at 3 TB/s, ~0.6 ms eager.
Measured: 1.9 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

batch_size = 16
channels = 256
height = 128
width = 128

KBENCH = {
    "dtype": "float32",
    # Two-tap fp32 lerps with weights 1/4, 3/4: orders of evaluation differ by ~1 ulp.
    "atol": 1e-5,
    "rtol": 1e-5,
    "shapes": {"odd": {"batch_size": 3, "channels": 67, "height": 127, "width": 93}},
    "cpu_shapes": {"small": {"batch_size": 2, "channels": 4, "height": 8, "width": 8},
                   "odd": {"batch_size": 1, "channels": 3, "height": 7, "width": 5}},
    "flops": lambda s: 8 * 4 * s["batch_size"] * s["channels"] * s["height"] * s["width"],
    "bytes": lambda s: 4 * 5 * s["batch_size"] * s["channels"] * s["height"] * s["width"],
    "tags": ["interpolation", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def get_inputs():
    # x: [batch_size, channels, height, width] fp32
    return [torch.randn(batch_size, channels, height, width)]


def get_init_inputs():
    return []
