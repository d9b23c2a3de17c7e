"""Exact GELU, 0.5 * x * (1 + erf(x / sqrt(2))), with erf from tl.math; the constant is a
module-level float folded in as a constexpr.

Problem: level1/gelu_erf
Style: tl.math.erf; module-level float constant as tl.constexpr; an @triton.jit device helper;
    int64 offsets; masked tail handled by the EVEN heuristic
Expected: correct
"""

import math

import torch
import torch.nn as nn
import triton
import triton.language as tl

INV_SQRT2 = tl.constexpr(1.0 / math.sqrt(2.0))


@triton.jit
def _gelu(x):
    return 0.5 * x * (1.0 + tl.math.erf(x * INV_SQRT2))


@triton.heuristics({"EVEN": lambda a: a["n"] % a["BLOCK"] == 0})
@triton.jit
def _gelu_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr, EVEN: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    if EVEN:
        x = tl.load(x_ptr + offs).to(tl.float32)
        tl.store(y_ptr + offs, _gelu(x))
    else:
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + offs, _gelu(x), mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x.contiguous()
        y = torch.empty_like(xc)
        n = xc.numel()
        _gelu_kernel[(triton.cdiv(n, 1024),)](xc, y, n, BLOCK=1024)
        return y
