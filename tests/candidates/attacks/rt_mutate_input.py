"""Attack: mutating the input — the kernel writes relu in place into x and returns x.

The values returned are right; the side effect on the caller's tensor is not.

Problem: level1/relu
Expected: caught at run time: incorrect (input modified in place; output aliases the input)
"""

import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _relu_inplace(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(x_ptr + offs, tl.maximum(tl.load(x_ptr + offs, mask=mask), 0.0), mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        _relu_inplace[(triton.cdiv(x.numel(), 1024),)](x, x.numel(), BLOCK=1024)
        return x
