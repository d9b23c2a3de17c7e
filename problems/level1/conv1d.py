"""Standard 1-D convolution in bf16, kernel 3, stride 1, padding 1, no bias (a speech/audio
encoder layer), NCL layout: x [batch_size, in_channels, length], weight
[out_channels, in_channels, 3] bf16 (nn.Conv1d's default init, cast), y
[batch_size, out_channels, length] bf16 with fp32 accumulation. An implicit GEMM with
K = 3 * in_channels; zero padding at both ends.
H100 estimate: 2*16*1024*1024*3*4096 = 412 GFLOP -> ~1 ms eager (cuDNN bf16); 0.27 GB.
Measured: 0.84 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

batch_size = 16
in_channels = 1024
out_channels = 1024
length = 4096
kernel_size = 3

KBENCH = {
    "dtype": "bfloat16",
    # Outputs have std ~0.58; fp32 accumulation of 3072 products then one bf16 rounding
    # (<= 2^-8 relative): rtol 2e-2 covers two ulps, atol 2e-2 values near zero under a cuDNN
    # algorithm that splits the reduction.
    "atol": 2e-2,
    "rtol": 2e-2,
    "shapes": {"odd": {"batch_size": 3, "in_channels": 257, "out_channels": 513, "length": 4093}},
    "cpu_shapes": {"small": {"batch_size": 2, "in_channels": 16, "out_channels": 24, "length": 32},
                   "odd": {"batch_size": 1, "in_channels": 7, "out_channels": 9, "length": 23}},
    "flops": lambda s: 2 * s["batch_size"] * s["out_channels"] * s["in_channels"] * 3 * s["length"],
    "bytes": lambda s: 2 * (s["batch_size"] * (s["in_channels"] + s["out_channels"]) * s["length"]
                            + 3 * s["out_channels"] * s["in_channels"]),
    "tags": ["conv", "compute-bound", "bf16"],
}


class Model(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=1,
                              bias=False).to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def get_inputs():
    # x: [batch_size, in_channels, length] bf16
    return [torch.randn(batch_size, in_channels, length, dtype=torch.bfloat16)]


def get_init_inputs():
    return [in_channels, out_channels]
