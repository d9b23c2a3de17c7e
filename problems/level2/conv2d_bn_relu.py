"""Conv2d 3x3 + BatchNorm (inference) + ReLU: ``y = relu(bn(conv(x)))``, the ResNet/VGG unit.

x: [batch_size, in_channels, height, width] fp16, NCHW contiguous; conv weight [out, in, 3, 3],
no conv bias, stride 1, padding 1 (output keeps height x width); BatchNorm2d in eval mode: uses
its running_mean / running_var buffers (randomized here, as after training) with weight and
bias, eps 1e-5 — never batch statistics. y: [batch_size, out_channels, height, width] fp16. The
BN folds into a per-channel scale and shift on the conv accumulator; eager runs three kernels.
Eager H100 estimate: 237 GFLOP fp16 conv via cuDNN ~0.6 ms + BN and ReLU passes over 103 MB ~0.15 ms
= ~0.8 ms (measured 0.76 ms).
"""

import torch
import torch.nn as nn

from reference_ops.resnet import bn_eval

batch_size = 64
in_channels = 256
out_channels = 256
height = 56
width = 56
kernel_size = 3

KBENCH = {
    "mode": "eval",  # inference: BatchNorm on its running statistics
    "dtype": "float16",
    # fp16 output (10-bit mantissa) of a 2304-term fp32-accumulated conv, then a per-channel
    # affine: eager and fused differ by ~1-2 fp16 ulps of |y| <~ 5; 1e-2 is generous, zeros fail.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {"odd": {"batch_size": 7, "height": 57, "width": 45}, "wide": {"in_channels": 128, "out_channels": 512, "height": 28, "width": 28}},
    "cpu_shapes": {
        "small": {"batch_size": 2, "in_channels": 16, "out_channels": 16, "height": 12, "width": 12},
        "odd": {"batch_size": 1, "in_channels": 8, "out_channels": 24, "height": 11, "width": 7},
    },
    "flops": lambda s: 2 * s["batch_size"] * s["out_channels"] * s["height"] * s["width"] * s["in_channels"] * 9,
    "bytes": lambda s: 2 * (s["batch_size"] * s["height"] * s["width"] * (s["in_channels"] + s["out_channels"])
                            + 9 * s["in_channels"] * s["out_channels"] + 4 * s["out_channels"]),
    "tags": ["conv", "batchnorm", "relu", "vision", "compute-bound"],
}


class Model(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=1e-5)
        with torch.no_grad():  # trained-looking statistics: a kernel that skips BN fails
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.normal_(0.0, 0.5)
            self.bn.running_mean.normal_(0.0, 0.5)
            self.bn.running_var.uniform_(0.25, 1.0)
        self.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(bn_eval(self.conv(x), self.bn))


def get_inputs():
    # x: [N, C_in, H, W]
    return [torch.randn(batch_size, in_channels, height, width, dtype=torch.float16)]


def get_init_inputs():
    return [in_channels, out_channels]
