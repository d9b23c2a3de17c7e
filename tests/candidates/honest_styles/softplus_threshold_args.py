"""Softplus with beta and threshold as float kernel arguments (linear above the threshold,
log1p(exp) below it, written stably).

Problem: level1/softplus
Style: two float scalar arguments; bounds checks on the Python floats; a device helper;
    heuristics-chosen warps; int64 offsets
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _log1p_exp(z):
    # log(1 + exp(z)) without overflow
    return tl.maximum(z, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(z)))


@triton.heuristics({"num_warps": lambda a: 8 if a["BLOCK"] >= 2048 else 4})
@triton.jit
def _softplus_kernel(x_ptr, y_ptr, n, beta, inv_beta, threshold, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    bx = x * beta
    y = tl.where(bx > threshold, x, _log1p_exp(bx) * inv_beta)
    tl.store(y_ptr + offs, y, mask=mask)


def softplus(x: torch.Tensor, beta: float = 1.0, threshold: float = 20.0) -> torch.Tensor:
    if beta <= 0:
        raise ValueError("beta must be positive")
    xc = x.contiguous()
    y = torch.empty_like(xc)
    n = xc.numel()
    _softplus_kernel[(triton.cdiv(n, 1024),)](xc, y, n, beta, 1.0 / beta, threshold, BLOCK=1024)
    return y


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.beta = 1.0
        self.threshold = 20.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return softplus(x, self.beta, self.threshold)
