"""ResNet-18 stage 2 in fp16 inference: two BasicBlocks, the first downsampling 64 -> 128 channels.

x: [batch_size, in_channels, height, width] fp16 NCHW -> [batch_size, out_channels, height/2,
width/2] fp16 (ceil for odd sizes). Block 1: relu(bn(conv3x3 stride 2)) -> bn(conv3x3) plus the
shortcut bn(conv1x1 stride 2)(x), relu; block 2: the same at stride 1 with the identity shortcut.
Convs have no bias and padding 1 (3x3) / 0 (1x1); every BatchNorm uses its running statistics
(inference, randomized as after training), eps 1e-5. Each BN folds into its conv's epilogue.
Eager H100 estimate: 105 GFLOP of fp16 cuDNN convs ~0.4 ms + ~12 BN/ReLU/add kernels over 26-51 MB
~0.2 ms = ~0.6 ms (batch 128 at 56 x 56; measured 0.92 ms).
"""

import torch
import torch.nn as nn

from reference_ops.resnet import BasicBlock

batch_size = 128
in_channels = 64
out_channels = 128
height = 56
width = 56

KBENCH = {
    "mode": "eval",  # inference: BatchNorm on its running statistics
    "dtype": "float16",
    # four fp16 convs (K up to 1152) in sequence with fp16 roundings and BN affines between:
    # eager is 4.3e-4 rel-L2 from fp64, worst element at 18% of this bound (measured on an
    # H100); skipping a BN, the shortcut or a ReLU fails.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {"odd": {"batch_size": 5, "height": 55, "width": 45}, "imagenet_b32": {"batch_size": 32}},
    "cpu_shapes": {"small": {"batch_size": 2, "in_channels": 8, "out_channels": 16, "height": 12, "width": 12},
                   "odd": {"batch_size": 1, "in_channels": 8, "out_channels": 24, "height": 11, "width": 9}},
    "flops": lambda s: 2 * s["batch_size"] * ((s["height"] + 1) // 2) * ((s["width"] + 1) // 2) * s["out_channels"] * (
        9 * s["in_channels"] + 3 * 9 * s["out_channels"] + s["in_channels"]),
    "bytes": lambda s: 2 * (s["batch_size"] * s["height"] * s["width"] * s["in_channels"]
                            + s["batch_size"] * ((s["height"] + 1) // 2) * ((s["width"] + 1) // 2) * s["out_channels"]
                            + s["out_channels"] * (10 * s["in_channels"] + 27 * s["out_channels"] + 20)),
    "tags": ["resnet", "conv", "batchnorm", "vision", "fp16", "model"],
}


class Model(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.blocks = nn.Sequential(BasicBlock(in_ch, out_ch, stride=2), BasicBlock(out_ch, out_ch))
        self.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def get_inputs():
    # x: [N, C_in, H, W]
    return [torch.randn(batch_size, in_channels, height, width, dtype=torch.float16)]


def get_init_inputs():
    return [in_channels, out_channels]
