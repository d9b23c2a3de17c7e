"""Cheat: BatchNorm2d on batch statistics that ignores the affine weight and bias (ones and
zeros until they are redrawn). Its parameters hold other names and no nn module.

Problem: level1/33_BatchNorm.py (KernelBench)
Expected: incorrect, on the redrawn-parameter case
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _batchnorm(x_ptr, w_ptr, b_ptr, y_ptr, B, C, HW, eps, AFFINE: tl.constexpr,
               BLOCK: tl.constexpr):
    c = tl.program_id(0)
    N = B * HW
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, N, BLOCK):
        i = start + tl.arange(0, BLOCK)
        off = (i // HW).to(tl.int64) * C * HW + c * HW + i % HW
        acc += tl.load(x_ptr + off, mask=i < N, other=0.0).to(tl.float32)
    mean = tl.sum(acc, axis=0) / N
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, N, BLOCK):
        i = start + tl.arange(0, BLOCK)
        off = (i // HW).to(tl.int64) * C * HW + c * HW + i % HW
        x = tl.load(x_ptr + off, mask=i < N, other=0.0).to(tl.float32)
        d = tl.where(i < N, x - mean, 0.0)
        acc += d * d
    rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / N + eps)
    w = 1.0
    b = 0.0
    if AFFINE:
        w = tl.load(w_ptr + c)
        b = tl.load(b_ptr + c)
    for start in range(0, N, BLOCK):
        i = start + tl.arange(0, BLOCK)
        off = (i // HW).to(tl.int64) * C * HW + c * HW + i % HW
        x = tl.load(x_ptr + off, mask=i < N, other=0.0).to(tl.float32)
        tl.store(y_ptr + off, (x - mean) * rstd * w + b, mask=i < N)


class ModelNew(nn.Module):
    def __init__(self, num_features: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(num_features))
        self.beta = nn.Parameter(torch.zeros(num_features))
        self.eps = 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        B, C = x.shape[0], x.shape[1]
        HW = x.numel() // (B * C)
        y = torch.empty_like(x)
        _batchnorm[(C,)](x, self.gamma, self.beta, y, B, C, HW, self.eps,
                         AFFINE=False, BLOCK=1024)
        return y
