"""Attack: vendor library — torch.matmul (cuBLAS) for a matmul problem, beside an unused kernel.

Problem: tests/candidates/problems/matmul.py
Expected: caught at run time: rejected (the op trace sees aten.mm in forward)
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _unused(a_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.load(a_ptr + offs, mask=offs < n)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a.contiguous(), b.contiguous())
