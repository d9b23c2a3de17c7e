"""GroupNorm forward: one program per (sample, group) computes the statistics, a second kernel
applies them per channel; the group arithmetic happens on Python ints in the Function.

Problem: level1/groupnorm
Style: autograd Function whose forward takes Python ints (num_channels // num_groups, bounds
    checks on int arguments); ctx attributes; two kernels and a launcher helper; int64 offsets;
    multi-block loop over long groups; float scalar argument
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _group_stats_kernel(X, Mean, Rstd, group_numel, eps, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)  # pid = sample * num_groups + group
    base = X + pid * group_numel
    s = tl.zeros([BLOCK], dtype=tl.float32)
    for off in range(0, group_numel, BLOCK):
        idx = off + tl.arange(0, BLOCK)
        s += tl.load(base + idx, mask=idx < group_numel, other=0.0).to(tl.float32)
    mean = tl.sum(s, axis=0) / group_numel
    q = tl.zeros([BLOCK], dtype=tl.float32)
    for off in range(0, group_numel, BLOCK):
        idx = off + tl.arange(0, BLOCK)
        x = tl.load(base + idx, mask=idx < group_numel, other=0.0).to(tl.float32)
        d = tl.where(idx < group_numel, x - mean, 0.0)
        q += d * d
    var = tl.sum(q, axis=0) / group_numel
    tl.store(Mean + pid, mean)
    tl.store(Rstd + pid, 1.0 / tl.sqrt(var + eps))


@triton.jit
def _group_apply_kernel(X, Y, W, B, Mean, Rstd, num_channels, channels_per_group, hw,
                        BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)  # pid = sample * num_channels + channel
    channel = pid % num_channels
    sample = pid // num_channels
    stat = sample * (num_channels // channels_per_group) + channel // channels_per_group
    mean = tl.load(Mean + stat)
    rstd = tl.load(Rstd + stat)
    w = tl.load(W + channel).to(tl.float32)
    b = tl.load(B + channel).to(tl.float32)
    for off in range(0, hw, BLOCK):
        idx = off + tl.arange(0, BLOCK)
        mask = idx < hw
        x = tl.load(X + pid * hw + idx, mask=mask, other=0.0).to(tl.float32)
        tl.store(Y + pid * hw + idx, (x - mean) * rstd * w + b, mask=mask)


def _block_for(n: int, cap: int = 1024) -> int:
    return min(triton.next_power_of_2(max(n, 1)), cap)


class GroupNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, X, W, B, num_channels, num_groups, eps):
        if num_channels % num_groups != 0:
            raise ValueError("num_channels must be divisible by num_groups")
        if X.dim() < 2 or X.shape[1] != num_channels:
            raise ValueError(f"expected {num_channels} channels, got {tuple(X.shape)}")
        channels_per_group = num_channels // num_groups
        batch = X.shape[0]
        hw = X.numel() // (batch * num_channels)
        group_numel = channels_per_group * hw
        X = X.contiguous()
        mean = torch.empty(batch * num_groups, dtype=torch.float32, device=X.device)
        rstd = torch.empty_like(mean)
        Y = torch.empty_like(X)
        _group_stats_kernel[(batch * num_groups,)](X, mean, rstd, group_numel, eps,
                                                   BLOCK=_block_for(group_numel))
        _group_apply_kernel[(batch * num_channels,)](X, Y, W, B, mean, rstd, num_channels,
                                                     channels_per_group, hw, BLOCK=_block_for(hw))
        ctx.num_channels = num_channels
        ctx.num_groups = num_groups
        ctx.save_for_backward(X, W, B, mean, rstd)
        return Y


class ModelNew(nn.Module):
    def __init__(self, channels: int, num_groups: int):
        super().__init__()
        self.num_channels = channels
        self.num_groups = num_groups
        self.eps = 1e-5
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        with torch.no_grad():
            self.weight.copy_(1 + 0.1 * torch.randn(channels))
            self.bias.copy_(0.1 * torch.randn(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return GroupNormFunction.apply(x, self.weight, self.bias, self.num_channels,
                                       self.num_groups, self.eps)
