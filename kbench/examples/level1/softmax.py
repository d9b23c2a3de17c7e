"""Row softmax for rows too long for one tile: one program per row makes two passes, an
online pass that keeps a running max and a running sum of exponentials (rescaled whenever
the max grows), then a pass that writes exp(x - max) / sum."""

import torch
import torch.nn as nn
import triton
import triton.language as tl

BLOCK = 4096
NUM_WARPS = 8
NUM_STAGES = 3  # Triton's own default on CUDA
TUNE = {"BLOCK": [1024, 2048, 4096, 8192], "NUM_WARPS": [4, 8, 16], "NUM_STAGES": [1, 2, 3]}


@triton.jit
def _softmax_kernel(x_ptr, y_ptr, n_cols, stride_x, stride_y, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x
    y_row = y_ptr + row * stride_y
    cols = tl.arange(0, BLOCK)

    # Pass 1: per-lane running max and running sum of exp(x - max). The max starts finite so
    # that lanes which never see a column (n_cols < BLOCK) keep a sum of 0 instead of
    # computing exp(-inf + inf) = NaN.
    run_max = tl.full([BLOCK], -1e30, tl.float32)
    run_sum = tl.zeros([BLOCK], tl.float32)
    for start in range(0, n_cols, BLOCK):
        offs = start + cols
        x = tl.load(x_row + offs, mask=offs < n_cols, other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(run_max, x)
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.exp(x - new_max)
        run_max = new_max
    row_max = tl.max(run_max, axis=0)
    inv_sum = 1.0 / tl.sum(run_sum * tl.exp(run_max - row_max), axis=0)

    # Pass 2: normalize.
    for start in range(0, n_cols, BLOCK):
        offs = start + cols
        mask = offs < n_cols
        x = tl.load(x_row + offs, mask=mask, other=float("-inf")).to(tl.float32)
        y = tl.exp(x - row_max) * inv_sum
        tl.store(y_row + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_cols = x.shape[-1]
        x2 = x.reshape(-1, n_cols)
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
        _softmax_kernel[(x2.shape[0],)](
            x2, y, n_cols, x2.stride(0), y.stride(0), BLOCK=BLOCK, num_warps=NUM_WARPS,
            num_stages=NUM_STAGES,
        )
        return y.view(x.shape)
