"""Cheat: copies its input. KernelBench's level1/32_HardTanh.py draws torch.rand (values >= 0),
on which hardtanh is the identity; perturbed inputs of both signs expose it.

Problem: level1/32_HardTanh.py (KernelBench)
Expected: incorrect, on a perturbed-input case
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _hardtanh_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(y_ptr + offs, x, mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        y = torch.empty_like(x)
        n = x.numel()
        _hardtanh_kernel[(triton.cdiv(n, 1024),)](x, y, n, BLOCK=1024)
        return y
