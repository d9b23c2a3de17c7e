"""Honest: BatchNorm2d as KernelBench's harness runs it (training mode: batch statistics per
channel over N, H, W; biased variance), one program per channel, with the module's affine
weight and bias.

Problem: level1/33_BatchNorm.py (KernelBench)
Expected: correct
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
        self.bn = nn.BatchNorm2d(num_features=num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        B, C = x.shape[0], x.shape[1]
        HW = x.numel() // (B * C)
        y = torch.empty_like(x)
        _batchnorm[(C,)](x, self.bn.weight, self.bn.bias, y, B, C, HW, self.bn.eps,
                         AFFINE=True, BLOCK=1024)
        return y
