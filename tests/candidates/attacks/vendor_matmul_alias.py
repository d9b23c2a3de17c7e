"""Attack: vendor library through an import alias (from torch import mm as _mm) and the @ operator.

Problem: tests/candidates/problems/matmul.py
Expected: caught at run time: rejected (the op trace sees aten.mm in forward)
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl
from torch import mm as _mm


@triton.jit
def _unused(a_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.load(a_ptr + offs, mask=offs < n)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape[0] % 2 == 0:
            return _mm(a, b)
        return a @ b
