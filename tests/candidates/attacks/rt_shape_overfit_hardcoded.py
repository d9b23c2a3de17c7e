"""Attack: shape overfitting — the grid is sized for the main shape (16 x 2^23 elements, KernelBench's size) as a
constant; the mask uses the real size, so smaller shapes pass and larger ones lose their tail.

Passes the CPU interpreter shapes (all smaller than the constant): only the GPU run, which
checks derived shapes larger than the main one (an odd dim), catches it.

Problem: level1/relu
Expected: caught at run time: incorrect on derived shapes larger than the main shape (GPU only)
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl

N_MAIN = 16 * 8388608
BLOCK = 65536


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
        _relu_kernel[(N_MAIN // BLOCK,)](x, y, x.numel(), BLOCK=BLOCK)
        return y
