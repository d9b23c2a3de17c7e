"""RMSNorm whose reciprocal square root comes from libdevice, imported the way libraries guard
it across Triton versions, with a version probe choosing the row layout.

Problem: level1/rmsnorm
Style: optional import guarded by try/except ModuleNotFoundError; tl.extra.libdevice; packaging.version
    comparison with torch.__version__ and triton.__version__; module-level device probe;
    bf16 in, fp32 accumulation; multi-block fallback for long rows
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl
from packaging import version

try:
    # Triton >= 3.0 exposes libdevice under extra/
    from triton.language.extra.libdevice import rsqrt
except ModuleNotFoundError:
    from triton.language.extra.cuda.libdevice import rsqrt

TORCH_GE_2_1 = version.parse(torch.__version__) >= version.parse("2.1")
TRITON_GE_3 = version.parse(triton.__version__).major >= 3
HAS_CUDA = torch.cuda.is_available()
MAX_ROW_BLOCK = 4096 if HAS_CUDA else 1024


@triton.jit
def _rmsnorm_one_pass(x_ptr, w_ptr, y_ptr, stride_x, stride_y, n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    r = rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * stride_y + cols, (x * r * w).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rmsnorm_looped(x_ptr, w_ptr, y_ptr, stride_x, stride_y, n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x
    y_row = y_ptr + row * stride_y
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_row + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        acc += x * x
    r = rsqrt(tl.sum(acc, axis=0) / n_cols + eps)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_row + cols, (x * r * w).to(y_ptr.dtype.element_ty), mask=mask)


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x2d = x.reshape(-1, x.shape[-1])
    if x2d.stride(-1) != 1:
        x2d = x2d.contiguous()
    n_rows, n_cols = x2d.shape
    y = torch.empty_like(x2d)
    block = triton.next_power_of_2(n_cols)
    if block <= MAX_ROW_BLOCK:
        _rmsnorm_one_pass[(n_rows,)](x2d, weight, y, x2d.stride(0), y.stride(0), n_cols, eps,
                                     BLOCK=block)
    else:
        _rmsnorm_looped[(n_rows,)](x2d, weight, y, x2d.stride(0), y.stride(0), n_cols, eps,
                                   BLOCK=MAX_ROW_BLOCK // 2)
    return y.view(x.shape)


class ModelNew(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.weight = nn.Parameter((1 + 0.1 * torch.randn(hidden)).to(torch.bfloat16))
        self.eps = 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rmsnorm(x, self.weight, self.eps)
