"""Bias add + tanh-GELU on bf16 activations, with the sum rounded to bf16 first as the unfused
x + bias does; a 2-D grid of (row block, column block) tiles so the bias tile is loaded once.

Problem: level2/bias_gelu
Style: 2-D tiles with a broadcast bias row; bf16 round trip between fused stages; tanh via
    exp2 with a log2(e) constexpr; grid lambda over two meta block sizes; int64 offsets
Expected: correct
"""

import math

import torch
import torch.nn as nn
import triton
import triton.language as tl

SQRT_2_OVER_PI = tl.constexpr(math.sqrt(2.0 / math.pi))
TWO_LOG2E = tl.constexpr(2.0 * math.log2(math.e))


@triton.jit
def _tanh(z):
    e = tl.exp2(-TWO_LOG2E * tl.abs(z))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(z >= 0.0, t, -t)


@triton.jit
def _bias_gelu_kernel(x_ptr, b_ptr, y_ptr, M, N, stride_m, BLOCK_M: tl.constexpr,
                      BLOCK_N: tl.constexpr):
    rm = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    bias = tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + rm[:, None] * stride_m + rn[None, :], mask=mask, other=0.0)
    h = (x.to(tl.float32) + bias[None, :]).to(y_ptr.dtype.element_ty).to(tl.float32)
    y = 0.5 * h * (1.0 + _tanh(SQRT_2_OVER_PI * (h + 0.044715 * h * h * h)))
    tl.store(y_ptr + rm[:, None] * stride_m + rn[None, :], y.to(y_ptr.dtype.element_ty),
             mask=mask)


class ModelNew(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.bias = nn.Parameter((torch.randn(features) * 0.5).to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, x.shape[-1]).contiguous()
        M, N = x2d.shape
        y = torch.empty_like(x2d)
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(N, meta["BLOCK_N"]))  # noqa: E731
        _bias_gelu_kernel[grid](x2d, self.bias, y, M, N, x2d.stride(0), BLOCK_M=16, BLOCK_N=128)
        return y.view(x.shape)
