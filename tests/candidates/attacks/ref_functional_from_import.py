"""Attack: calling the reference imported by name (from torch.nn.functional import relu as act).

Problem: level1/relu
Expected: caught at run time: rejected (the op trace sees aten.relu in forward)
"""

import torch.nn as nn
import triton
import triton.language as tl
from torch.nn.functional import relu as act


@triton.jit
def _relu_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(y_ptr + offs, tl.maximum(x, 0.0), mask=mask)



class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return act(x)
