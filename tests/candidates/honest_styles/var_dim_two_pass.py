"""Unbiased variance of each row, two passes (mean, then centred squares) for accuracy on rows
with a large offset; the correction is a Python int passed to the kernel.

Problem: level1/var_dim
Style: Python int argument (correction) with a bounds check; two-pass reduction in fp32;
    multi-block loop; int64 offsets; warnings for the degenerate case
Expected: correct
"""

import warnings

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _var_rows_kernel(x_ptr, out_ptr, n_cols, stride, correction, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = x_ptr + row * stride
    acc = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        acc += tl.load(base + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
    mean = tl.sum(acc, axis=0) / n_cols
    acc = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(base + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        d = tl.where(cols < n_cols, x - mean, 0.0)
        acc += d * d
    tl.store(out_ptr + row, tl.sum(acc, axis=0) / (n_cols - correction))


def var_rows(x: torch.Tensor, correction: int = 1) -> torch.Tensor:
    n_cols = x.shape[-1]
    if correction < 0 or correction > n_cols:
        raise ValueError(f"correction {correction} out of range for rows of {n_cols}")
    if n_cols - correction == 0:
        warnings.warn("variance of rows with no degrees of freedom is infinite", stacklevel=2)
    x2d = x.reshape(-1, n_cols).contiguous()
    out = torch.empty(x2d.shape[0], dtype=x.dtype, device=x.device)
    _var_rows_kernel[(x2d.shape[0],)](x2d, out, n_cols, x2d.stride(0), correction,
                                      BLOCK=min(triton.next_power_of_2(n_cols), 512))
    return out.view(x.shape[:-1])


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return var_rows(x, correction=1)
