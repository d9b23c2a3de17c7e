"""Attack: storing the reference op in __init__ (self.op = torch.relu) and calling it in forward.

__init__ may run torch ops to preprocess weights, but may not hand an op to forward.

Problem: level1/relu
Expected: rejected by policy: reference-call
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _relu_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(y_ptr + offs, tl.maximum(x, 0.0), mask=mask)



class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.op = torch.relu

    def forward(self, x):
        return self.op(x)
