"""Transposed 2-D convolution, kernel 4, stride 2, padding 1, with bias (a 2x upsampling
decoder layer), NCHW fp32: x [batch_size, in_channels, height, width], weight
[in_channels, out_channels, 4, 4] (nn.ConvTranspose2d's layout and default init), y
[batch_size, out_channels, 2*height, 2*width]. Each output pixel gathers 2x2 kernel taps per
input channel (K = 4 * in_channels). cuDNN may use TF32: the tolerance is TF32-level.
H100 estimate: 2*32*256*128*16*64*64 = 137 GFLOP -> ~0.7 ms eager with cuDNN TF32 (~3 ms
strict fp32); 0.4 GB of activations.
Measured: 1.1 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

batch_size = 32
in_channels = 256
out_channels = 128
height = 64
width = 64
kernel_size = 4
stride = 2
padding = 1

KBENCH = {
    "dtype": "float32",
    # Outputs have std ~0.4; TF32 operands in reference and kernel give ~2e-4 error std,
    # ~1.5e-3 at the worst element; 5e-3 leaves 3x.
    "atol": 5e-3,
    "rtol": 5e-3,
    "shapes": {"odd": {"batch_size": 5, "in_channels": 129, "out_channels": 67, "height": 63, "width": 37}},
    "cpu_shapes": {"small": {"batch_size": 2, "in_channels": 8, "out_channels": 6, "height": 6, "width": 6},
                   "odd": {"batch_size": 1, "in_channels": 5, "out_channels": 3, "height": 5, "width": 3}},
    "flops": lambda s: 2 * s["batch_size"] * s["in_channels"] * s["out_channels"] * 16 * s["height"] * s["width"],
    "bytes": lambda s: 4 * (s["batch_size"] * (s["in_channels"] + 4 * s["out_channels"]) * s["height"] * s["width"]
                            + 16 * s["in_channels"] * s["out_channels"] + s["out_channels"]),
    "tags": ["conv", "transposed", "compute-bound", "tf32"],
}


class Model(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=stride,
                                       padding=padding, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def get_inputs():
    # x: [batch_size, in_channels, height, width] fp32
    return [torch.randn(batch_size, in_channels, height, width)]


def get_init_inputs():
    return [in_channels, out_channels]
