"""Attack: returning an untouched output buffer — allocate, launch a kernel that writes nothing.

Problem: level1/relu
Expected: caught at run time: incorrect (output buffer never written; whatever memory held)
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _noop(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.load(x_ptr + offs, mask=offs < 0)  # reads nothing, writes nothing


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        y = torch.empty_like(x)
        _noop[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
        return y
