"""Standard 2-D convolution, 3x3, stride 1, padding 1, no bias (a ResNet stage-2 conv), NCHW
fp32: x [batch_size, in_channels, height, width], weight [out_channels, in_channels, 3, 3]
(nn.Conv2d's default init), y [batch_size, out_channels, height, width]. An implicit GEMM
with K = in_channels * 9. cuDNN uses TF32 for fp32 convolutions by default, and so may a
kernel: the tolerance is TF32-level.
H100 estimate: 2*64*256*256*9*56*56 = 237 GFLOP -> ~1 ms eager with cuDNN TF32 (~5 ms if
strict fp32); 0.4 GB of activations.
Measured: 0.9 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

batch_size = 64
in_channels = 256
out_channels = 256
height = 56
width = 56
kernel_size = 3

KBENCH = {
    "dtype": "float32",
    # Outputs have std ~0.58; TF32 operands (2^-11 roundoff) in both the reference and the
    # kernel give ~3e-4 error std, ~2e-3 at the worst of 51M outputs; 5e-3 leaves 2.5x.
    "atol": 5e-3,
    "rtol": 5e-3,
    "shapes": {"odd": {"batch_size": 7, "in_channels": 99, "out_channels": 130, "height": 57, "width": 45}},
    "cpu_shapes": {"small": {"batch_size": 2, "in_channels": 8, "out_channels": 16, "height": 10, "width": 10},
                   "odd": {"batch_size": 1, "in_channels": 5, "out_channels": 7, "height": 9, "width": 6}},
    "flops": lambda s: 2 * s["batch_size"] * s["out_channels"] * s["in_channels"] * 9 * s["height"] * s["width"],
    "bytes": lambda s: 4 * (s["batch_size"] * (s["in_channels"] + s["out_channels"]) * s["height"] * s["width"]
                            + s["out_channels"] * s["in_channels"] * 9),
    "tags": ["conv", "compute-bound", "tf32"],
}


class Model(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def get_inputs():
    # x: [batch_size, in_channels, height, width] fp32
    return [torch.randn(batch_size, in_channels, height, width)]


def get_init_inputs():
    return [in_channels, out_channels]
