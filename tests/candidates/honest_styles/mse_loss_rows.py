"""Per-row mean squared error, with pred and target read in their own dtypes and the
squared differences accumulated in fp32; a generic row-reduction launcher serves it.

Problem: level1/mse_loss
Style: a reusable launcher (functools.partial over a kernel and its constexprs); int64
    offsets; 1/D as a float scalar argument; multi-block loop; collections.namedtuple for
    launch settings
Expected: correct
"""

import functools
from collections import namedtuple

import torch
import torch.nn as nn
import triton
import triton.language as tl

Launch = namedtuple("Launch", ["block", "num_warps"])


@triton.jit
def _mse_rows_kernel(a_ptr, b_ptr, out_ptr, n_cols, stride_a, stride_b, inv_n,
                     BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    acc = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        a = tl.load(a_ptr + row * stride_a + cols, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + row * stride_b + cols, mask=mask, other=0.0).to(tl.float32)
        d = a - b
        acc += d * d
    tl.store(out_ptr + row, tl.sum(acc, axis=0) * inv_n)


def _settings(n_cols: int) -> Launch:
    block = min(triton.next_power_of_2(n_cols), 1024)
    return Launch(block, 4 if block < 1024 else 8)


def _reduce_rows(kernel, a, b):
    n_cols = a.shape[-1]
    a2, b2 = a.reshape(-1, n_cols).contiguous(), b.reshape(-1, n_cols).contiguous()
    out = torch.empty(a2.shape[0], dtype=torch.float32, device=a.device)
    s = _settings(n_cols)
    kernel[(a2.shape[0],)](a2, b2, out, n_cols, a2.stride(0), b2.stride(0), 1.0 / n_cols,
                           BLOCK=s.block, num_warps=s.num_warps)
    return out.view(a.shape[:-1])


mse_rows = functools.partial(_reduce_rows, _mse_rows_kernel)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mse_rows(pred, target)
