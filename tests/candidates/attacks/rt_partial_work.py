"""Attack: partial work — the kernel processes only the first half of the elements.

Problem: level1/relu
Expected: caught at run time: incorrect (second half never written)
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _relu_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(y_ptr + offs, tl.maximum(tl.load(x_ptr + offs, mask=mask), 0.0), mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        y = torch.zeros_like(x)
        half = x.numel() // 2
        _relu_kernel[(triton.cdiv(half, 1024),)](x, y, half, BLOCK=1024)
        return y
