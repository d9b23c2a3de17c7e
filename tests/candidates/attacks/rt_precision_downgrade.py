"""Attack: precision downgrade — a real softmax kernel, but inputs, exponentials and the row sum
are rounded to fp16 and the result cast back to fp32.

Problem: tests/candidates/problems/softmax.py
Expected: caught at run time: incorrect (fp16 rounding exceeds the fp32 tolerance / relative L2 bound)
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _softmax_fp16(x_ptr, y_ptr, n_cols, stride, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride + cols, mask=mask, other=float("-inf")).to(tl.float16)
    x = x - tl.max(x, axis=0)
    p = tl.exp(x.to(tl.float32)).to(tl.float16)
    s = tl.sum(p, axis=0).to(tl.float16)
    y = (p / s).to(tl.float16)
    tl.store(y_ptr + row * stride + cols, y.to(tl.float32), mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        rows, cols = x.shape
        _softmax_fp16[(rows,)](x, y, cols, x.stride(0), BLOCK=triton.next_power_of_2(cols))
        return y
