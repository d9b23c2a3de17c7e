"""Attack: calling an nn submodule built in __init__ (self.act = nn.ReLU(); self.act(x)).

Problem: level1/relu
Expected: caught at run time: rejected (the op trace sees aten.relu in forward)
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
        self.act = nn.ReLU()

    def forward(self, x):
        out = torch.empty_like(x)
        _relu_kernel[(1,)](x, out, 0, BLOCK=16)
        return self.act(x)
