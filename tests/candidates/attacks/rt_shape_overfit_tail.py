"""Attack: shape overfitting — no mask and a floor-divided grid, exact only when numel is a
multiple of BLOCK (true for the main shape 16 x 2^20, false for odd shapes).

Problem: level1/relu
Expected: caught at run time: incorrect on the odd and derived shapes (tail never written)
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _relu_kernel(x_ptr, y_ptr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.maximum(tl.load(x_ptr + offs), 0.0))


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        y = torch.zeros_like(x)
        _relu_kernel[(x.numel() // BLOCK,)](x, y, BLOCK=BLOCK)
        return y
