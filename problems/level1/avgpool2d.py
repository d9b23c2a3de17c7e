"""2-D average pooling, kernel 3, stride 1, padding 1, count_include_pad=False (the Inception
branch pool), over an NCHW fp32 map [batch_size, channels, height, width]; the output has the
input's shape. At the borders the divisor is the number of real (unpadded) positions in the
window: 4 at corners, 6 on edges, 9 inside -- a kernel that always divides by 9 fails.
H100 estimate: 0.82 GB read + 0.82 GB written -> ~0.6 ms at ~3 TB/s.
Measured: 2.7 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

batch_size = 256
channels = 256
height = 56
width = 56
kernel_size = 3
stride = 1
padding = 1

KBENCH = {
    "dtype": "float32",
    # Up to 9 fp32 additions and one division: ~2 ulp apart across summation orders.
    "atol": 1e-5,
    "rtol": 1e-5,
    "shapes": {"odd": {"batch_size": 13, "channels": 67, "height": 73, "width": 35}},
    "cpu_shapes": {"small": {"batch_size": 2, "channels": 4, "height": 16, "width": 16},
                   "odd": {"batch_size": 1, "channels": 3, "height": 11, "width": 7}},
    "flops": lambda s: 9 * s["batch_size"] * s["channels"] * s["height"] * s["width"],
    "bytes": lambda s: 2 * 4 * s["batch_size"] * s["channels"] * s["height"] * s["width"],
    "tags": ["pooling", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, kernel_size, stride, padding, count_include_pad=False)


def get_inputs():
    # x: [batch_size, channels, height, width] fp32
    return [torch.randn(batch_size, channels, height, width)]


def get_init_inputs():
    return []
