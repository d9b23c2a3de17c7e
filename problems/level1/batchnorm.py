"""BatchNorm2d in inference mode: y = (x - running_mean[c]) / sqrt(running_var[c] + eps)
* weight[c] + bias[c] over an NCHW fp32 map [batch_size, channels, height, width] (eps 1e-5).
The running statistics are buffers and weight/bias parameters, all randomised in __init__ (no
batch statistics, nothing updated: the model is in eval mode). Elementwise per channel.
H100 estimate: 0.82 GB read + 0.82 GB written -> ~0.55 ms at ~3 TB/s.
Measured: 0.69 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

batch_size = 64
channels = 256
height = 112
width = 112
eps = 1e-5

KBENCH = {
    "mode": "eval",  # inference: BatchNorm on its running statistics
    "dtype": "float32",
    # A per-channel affine map: (x - m) * rsqrt(v + eps) vs / sqrt differ by an ulp or two.
    "atol": 1e-5,
    "rtol": 1e-5,
    "shapes": {"odd": {"batch_size": 7, "channels": 129, "height": 111, "width": 97}},
    "cpu_shapes": {"small": {"batch_size": 2, "channels": 16, "height": 8, "width": 8},
                   "odd": {"batch_size": 3, "channels": 9, "height": 7, "width": 5}},
    "flops": lambda s: 2 * s["batch_size"] * s["channels"] * s["height"] * s["width"],
    "bytes": lambda s: 4 * (2 * s["batch_size"] * s["channels"] * s["height"] * s["width"]
                            + 4 * s["channels"]),
    "tags": ["norm", "elementwise", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=eps)
        with torch.no_grad():
            self.bn.running_mean.copy_(torch.randn(channels) * 0.5)
            self.bn.running_var.copy_(torch.rand(channels) * 2 + 0.25)
            self.bn.weight.copy_(1 + 0.2 * torch.randn(channels))
            self.bn.bias.copy_(0.2 * torch.randn(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


def get_inputs():
    # x: [batch_size, channels, height, width] fp32
    return [torch.randn(batch_size, channels, height, width)]


def get_init_inputs():
    return [channels]
