"""Residual add + RMSNorm (vLLM's fused_add_rms_norm): returns the normalized output and the sum.

x, residual: [num_tokens, hidden] bf16. ``h = x + residual`` rounded to bf16 (it is the next
layer's residual, returned as is); ``y = h / sqrt(mean(h^2) + 1e-5) * weight`` over hidden, in fp32
(from the bf16 h), rounded to bf16. Returns (y, h), both [num_tokens, hidden] bf16; weight: [hidden]
in [0.5, 1.5]. Memory-bound: read 2, write 2 is the floor; eager adds ~6 fp32 passes.
Eager H100 estimate: add + ~6 fp32 RMSNorm kernels over 134-268 MB (~2.5 GB moved) ~0.9 ms (measured 1.2 ms).
"""

import torch
import torch.nn as nn

from reference_ops.llama import add_rms_norm

num_tokens = 16384
hidden = 4096
eps = 1e-5

KBENCH = {
    "dtype": "bfloat16",
    # sum and normalization rounded to bf16 once (2^-9 relative): ~1 ulp between any two
    # correct kernels; 1e-2, while zeros, x or residual fail.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {"odd": {"num_tokens": 4093, "hidden": 5120}, "big": {"num_tokens": 8192, "hidden": 8192}},
    "cpu_shapes": {"small": {"num_tokens": 64, "hidden": 256}, "odd": {"num_tokens": 37, "hidden": 200}},
    "flops": lambda s: 5 * s["num_tokens"] * s["hidden"],
    "bytes": lambda s: 2 * (4 * s["num_tokens"] * s["hidden"] + s["hidden"]),
    "tags": ["norm", "rmsnorm", "residual", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(hidden, dtype=torch.bfloat16) + 0.5)

    def forward(self, x: torch.Tensor, residual: torch.Tensor):
        return add_rms_norm(x, residual, self.weight, eps)


def get_inputs():
    # x, residual: [T, hidden]; per-token scales so rows differ in norm
    x = torch.randn(num_tokens, hidden) * (0.5 + torch.rand(num_tokens, 1))
    residual = torch.randn(num_tokens, hidden) * (0.5 + 2 * torch.rand(num_tokens, 1))
    return [x.to(torch.bfloat16), residual.to(torch.bfloat16)]


def get_init_inputs():
    return [hidden]
