"""Inclusive prefix sum along each row: tl.cumsum inside a block and a running carry across
blocks, accumulated in fp32.

Problem: level1/cumsum
Style: tl.cumsum scan with a loop-carried scalar; int64 offsets; Python-side contiguity
    handling with .contiguous() and views
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _cumsum_rows_kernel(x_ptr, y_ptr, n_cols, stride, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    carry = 0.0
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_ptr + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
        s = tl.cumsum(x, axis=0) + carry
        tl.store(y_ptr + row * stride + cols, s, mask=mask)
        carry = carry + tl.sum(x, axis=0)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, x.shape[-1]).contiguous()
        y = torch.empty_like(x2d)
        _cumsum_rows_kernel[(x2d.shape[0],)](x2d, y, x2d.shape[1], x2d.stride(0),
                                             BLOCK=min(triton.next_power_of_2(x2d.shape[1]), 256))
        return y.view(x.shape)
