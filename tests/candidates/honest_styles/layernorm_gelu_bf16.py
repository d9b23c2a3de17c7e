"""LayerNorm followed by exact GELU on bf16 rows, fused in one kernel with the same two
roundings as the unfused code (LayerNorm's bf16 output, then GELU's).

Problem: level2/layernorm_gelu
Style: nn.LayerNorm kept as a submodule for its parameters (read through .weight/.bias,
    never called); tl.math.erf; explicit bf16 round trip between the fused stages; float eps;
    int64 offsets; multi-block fallback for long rows
Expected: correct
"""

import math

import torch
import torch.nn as nn
import triton
import triton.language as tl

INV_SQRT2 = tl.constexpr(1.0 / math.sqrt(2.0))


@triton.jit
def _ln_gelu_kernel(x_ptr, w_ptr, b_ptr, y_ptr, n_cols, stride, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = row * stride
    s = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        s += tl.load(x_ptr + base + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
    mean = tl.sum(s, axis=0) / n_cols
    q = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + base + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        d = tl.where(cols < n_cols, x - mean, 0.0)
        q += d * d
    rstd = 1.0 / tl.sqrt(tl.sum(q, axis=0) / n_cols + eps)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_ptr + base + cols, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        h = ((x - mean) * rstd * w + b).to(y_ptr.dtype.element_ty).to(tl.float32)
        y = 0.5 * h * (1.0 + tl.math.erf(h * INV_SQRT2))
        tl.store(y_ptr + base + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


class ModelNew(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, eps=1e-5, dtype=torch.bfloat16)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.normal_(0.0, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, x.shape[-1]).contiguous()
        y = torch.empty_like(x2d)
        block = min(triton.next_power_of_2(x2d.shape[1]), 1024)
        _ln_gelu_kernel[(x2d.shape[0],)](x2d, self.norm.weight, self.norm.bias, y, x2d.shape[1],
                                         x2d.stride(0), self.norm.eps, BLOCK=block)
        return y.view(x.shape)
