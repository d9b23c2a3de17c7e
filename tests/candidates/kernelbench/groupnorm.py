"""Honest: GroupNorm in Triton, one program per (sample, group), fp32 statistics, with the
nn.GroupNorm's own per-channel weight and bias.

Problem: level1/35_GroupNorm_.py (KernelBench)
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _groupnorm(x_ptr, w_ptr, b_ptr, y_ptr, G, CPG, HW, eps, AFFINE: tl.constexpr,
               BLOCK: tl.constexpr):
    pid = tl.program_id(0)  # sample * G + group
    g = pid % G
    N = CPG * HW
    base = pid.to(tl.int64) * N
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, N, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(x_ptr + base + offs, mask=offs < N, other=0.0).to(tl.float32)
    mean = tl.sum(acc, axis=0) / N
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, N, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + base + offs, mask=offs < N, other=0.0).to(tl.float32)
        d = tl.where(offs < N, x - mean, 0.0)
        acc += d * d
    rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / N + eps)
    for start in range(0, N, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < N
        x = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
        y = (x - mean) * rstd
        if AFFINE:
            c = g * CPG + offs // HW
            y = y * tl.load(w_ptr + c, mask=mask, other=0.0) + tl.load(b_ptr + c, mask=mask,
                                                                      other=0.0)
        tl.store(y_ptr + base + offs, y, mask=mask)


class ModelNew(nn.Module):
    def __init__(self, num_features: int, num_groups: int):
        super().__init__()
        self.gn = nn.GroupNorm(num_groups=num_groups, num_channels=num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        B, C = x.shape[0], x.shape[1]
        G = self.gn.num_groups
        HW = x.numel() // (B * C)
        y = torch.empty_like(x)
        _groupnorm[(B * G,)](x, self.gn.weight, self.gn.bias, y, G, C // G, HW, self.gn.eps,
                             AFFINE=True, BLOCK=1024)
        return y
