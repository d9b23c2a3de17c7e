"""GELU with the tanh approximation on bf16 activations, tanh from libdevice as kernel
libraries write it (fp32 math, one rounding to bf16 at the store).

Problem: level1/gelu_tanh
Style: tl.extra.libdevice tanh; bf16 in, fp32 compute, bf16 out; float constants as
    constexprs; autograd Function with ctx attributes; int64 offsets
Expected: correct
"""

import math

import torch
import torch.nn as nn
import triton
import triton.language as tl
from triton.language.extra import libdevice

SQRT_2_OVER_PI = tl.constexpr(math.sqrt(2.0 / math.pi))


@triton.jit
def _gelu_tanh_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    inner = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
    y = 0.5 * x * (1.0 + libdevice.tanh(inner))
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


class GeluTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        xc = x.contiguous()
        y = torch.empty_like(xc)
        n = xc.numel()
        ctx.BLOCK = 2048
        _gelu_tanh_kernel[(triton.cdiv(n, ctx.BLOCK),)](xc, y, n, BLOCK=ctx.BLOCK)
        ctx.save_for_backward(xc)
        return y


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return GeluTanh.apply(x)
