"""2-D neighbourhood attention (NATTEN / NAT / DiNAT style, dilation 1, non-causal, no
relative positional bias) over an X x Y feature map. q, k, v: [B, X, Y, heads, D]
(heads-last, NATTEN's layout). Query (x, y) attends to the kernel_size x kernel_size keys
(x', y') with sx(x) <= x' < sx(x) + ks and sy(y) <= y' < sy(y) + ks, where
s(n) = clamp(n - ks // 2, 0, N - ks): the window is centred on the query and, at the borders,
clamped inwards so that every query sees exactly ks**2 keys (needs X, Y >= ks). Scale
D**-0.5; fp32 softmax; output [B, X, Y, heads, D] bf16.
Eager on an H100: ~17 ms measured (the reference is dense attention under the neighbourhood
mask, in 1024-query chunks: O((XY)^2), while a neighbourhood kernel needs O(XY ks^2)); peak
memory ~2.3 GB.
"""

import torch
import torch.nn as nn

from reference_ops.attention import neighborhood_attention_2d

batch_size = 4
height = 64
width = 64
num_heads = 8
head_dim = 64
kernel_size = 13

KBENCH = {
    "dtype": "bfloat16",
    # a fused kernel with bf16 P over the 169 keys lands ~2.6e-3 rel-L2
    "atol": 1e-2,
    "rtol": 2e-2,
    "shapes": {
        "odd": {"batch_size": 3, "height": 45, "width": 77},
        "large": {"batch_size": 1, "height": 80, "width": 80},
    },
    "cpu_shapes": {
        "small": {"batch_size": 1, "height": 16, "width": 16, "num_heads": 2},
        "odd": {"batch_size": 2, "height": 13, "width": 19, "num_heads": 1},
    },
    "flops": lambda s: 4 * s["batch_size"] * s["height"] * s["width"] * s["num_heads"]
    * s["head_dim"] * s["kernel_size"] ** 2,
    "bytes": lambda s: 4 * 2 * s["batch_size"] * s["height"] * s["width"] * s["num_heads"]
    * s["head_dim"],
    "fixed": ["num_heads", "head_dim", "kernel_size"],
    "tags": ["attention", "neighborhood", "natten", "2d", "vision", "local"],
}


class Model(nn.Module):
    def __init__(self, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, q, k, v):
        return neighborhood_attention_2d(q, k, v, self.kernel_size).to(q.dtype)


def get_inputs():
    # q, k, v: [B, X, Y, heads, D]
    shape = (batch_size, height, width, num_heads, head_dim)
    return [torch.randn(shape, dtype=torch.bfloat16) for _ in range(3)]


def get_init_inputs():
    return [kernel_size]
