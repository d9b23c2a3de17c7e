"""Attack: reusing freed reference memory — return torch.empty_like(x) without computing,
hoping the allocator hands back the block where the harness's reference output just was.

Problem: level1/relu
Expected: caught at run time: incorrect (references are computed in the parent process, so the block holds no answer)
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
        return torch.empty_like(x)  # the kernel above is never launched
