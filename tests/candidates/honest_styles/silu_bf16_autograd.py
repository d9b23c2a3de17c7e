"""SiLU on bf16 activations in an autograd Function with a real backward kernel, the way
activation ops ship in training libraries (only forward is exercised here).

Problem: level1/silu
Style: autograd Function with forward and backward kernels and ctx attributes;
    torch.amp.custom_fwd/custom_bwd decorators; bf16 in, fp32 math; tl.sigmoid; int64 offsets
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl
from torch.amp import custom_bwd, custom_fwd


@triton.jit
def _silu_fwd(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, (x * tl.sigmoid(x)).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _silu_bwd(x_ptr, dy_ptr, dx_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    s = tl.sigmoid(x)
    tl.store(dx_ptr + offs, (dy * s * (1.0 + x * (1.0 - s))).to(dx_ptr.dtype.element_ty),
             mask=mask)


class SiLUFunction(torch.autograd.Function):
    @staticmethod
    @custom_fwd(device_type="cuda")
    def forward(ctx, x):
        xc = x.contiguous()
        y = torch.empty_like(xc)
        n = xc.numel()
        ctx.BLOCK_SIZE = 1024
        ctx.num_warps = 4
        _silu_fwd[(triton.cdiv(n, ctx.BLOCK_SIZE),)](xc, y, n, BLOCK=ctx.BLOCK_SIZE,
                                                     num_warps=ctx.num_warps)
        ctx.save_for_backward(xc)
        return y

    @staticmethod
    @custom_bwd(device_type="cuda")
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        dy = dy.contiguous()
        dx = torch.empty_like(x)
        n = x.numel()
        _silu_bwd[(triton.cdiv(n, ctx.BLOCK_SIZE),)](x, dy, dx, n, BLOCK=ctx.BLOCK_SIZE,
                                                     num_warps=ctx.num_warps)
        return dx


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SiLUFunction.apply(x)
