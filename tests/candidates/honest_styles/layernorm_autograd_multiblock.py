"""LayerNorm forward with a one-pass kernel for rows that fit a block and a three-pass
multi-block kernel for long rows, behind an autograd Function.

Problem: level1/layernorm
Style: torch.autograd.Function with ctx attributes; several kernels and launcher helpers per op;
    multi-block fallback for long rows; float scalar argument; int64 offsets; shape checks on
    Python ints; views and .contiguous()
Expected: correct
"""

import math

import torch
import torch.nn as nn
import triton
import triton.language as tl

MAX_FUSED_BLOCK = 512  # rows longer than this take the looped kernel


@triton.jit
def _layer_norm_fwd_fused(X, Y, W, B, Mean, Rstd, stride, N, eps, BLOCK_SIZE: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_SIZE)
    mask = cols < N
    x = tl.load(X + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / N
    xc = tl.where(mask, x - mean, 0.0)
    var = tl.sum(xc * xc, axis=0) / N
    rstd = 1.0 / tl.sqrt(var + eps)
    tl.store(Mean + row, mean)
    tl.store(Rstd + row, rstd)
    w = tl.load(W + cols, mask=mask)
    b = tl.load(B + cols, mask=mask)
    tl.store(Y + row * stride + cols, xc * rstd * w + b, mask=mask)


@triton.jit
def _layer_norm_fwd_looped(X, Y, W, B, Mean, Rstd, stride, N, eps, BLOCK_SIZE: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    X += row * stride
    Y += row * stride
    acc = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
    for off in range(0, N, BLOCK_SIZE):
        cols = off + tl.arange(0, BLOCK_SIZE)
        acc += tl.load(X + cols, mask=cols < N, other=0.0).to(tl.float32)
    mean = tl.sum(acc, axis=0) / N
    acc = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
    for off in range(0, N, BLOCK_SIZE):
        cols = off + tl.arange(0, BLOCK_SIZE)
        x = tl.load(X + cols, mask=cols < N, other=0.0).to(tl.float32)
        x = tl.where(cols < N, x - mean, 0.0)
        acc += x * x
    var = tl.sum(acc, axis=0) / N
    rstd = 1.0 / tl.sqrt(var + eps)
    tl.store(Mean + row, mean)
    tl.store(Rstd + row, rstd)
    for off in range(0, N, BLOCK_SIZE):
        cols = off + tl.arange(0, BLOCK_SIZE)
        mask = cols < N
        w = tl.load(W + cols, mask=mask)
        b = tl.load(B + cols, mask=mask)
        x = tl.load(X + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(Y + cols, (x - mean) * rstd * w + b, mask=mask)


def _launch_layer_norm(x2d, weight, bias, eps):
    M, N = x2d.shape
    y = torch.empty_like(x2d)
    mean = torch.empty((M,), dtype=torch.float32, device=x2d.device)
    rstd = torch.empty((M,), dtype=torch.float32, device=x2d.device)
    block = triton.next_power_of_2(N)
    num_warps = min(max(block // 256, 1), 8)
    if block <= MAX_FUSED_BLOCK:
        _layer_norm_fwd_fused[(M,)](x2d, y, weight, bias, mean, rstd, x2d.stride(0), N, eps,
                                    BLOCK_SIZE=block, num_warps=num_warps)
    else:
        block = MAX_FUSED_BLOCK
        _layer_norm_fwd_looped[(M,)](x2d, y, weight, bias, mean, rstd, x2d.stride(0), N, eps,
                                     BLOCK_SIZE=block, num_warps=num_warps)
    return y, mean, rstd, block, num_warps


class LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, normalized_shape, weight, bias, eps):
        if x.shape[-len(normalized_shape):] != tuple(normalized_shape):
            raise ValueError(f"expected trailing shape {normalized_shape}, got {tuple(x.shape)}")
        x2d = x.reshape(-1, math.prod(normalized_shape)).contiguous()
        y, mean, rstd, block, num_warps = _launch_layer_norm(x2d, weight, bias, eps)
        ctx.save_for_backward(x2d, weight, bias, mean, rstd)
        ctx.BLOCK_SIZE = block
        ctx.num_warps = num_warps
        ctx.eps = eps
        return y.view_as(x)


class ModelNew(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.normalized_shape = (hidden,)
        self.eps = 1e-5
        self.weight = nn.Parameter(torch.ones(hidden))
        self.bias = nn.Parameter(torch.zeros(hidden))
        with torch.no_grad():
            self.weight.copy_(1 + 0.1 * torch.randn(hidden))
            self.bias.copy_(0.1 * torch.randn(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return LayerNormFunction.apply(x, self.normalized_shape, self.weight, self.bias, self.eps)
