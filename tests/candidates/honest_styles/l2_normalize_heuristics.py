"""L2 normalisation of rows with @triton.heuristics deciding the block and whether the row
fits one block, and an explicit eps clamp like F.normalize.

Problem: level1/l2_normalize
Style: @triton.heuristics; tl.math functions; float scalar argument; int64 offsets; loop for
    rows longer than one block; a launcher helper with integer arithmetic on strides
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.heuristics({
    "BLOCK": lambda args: min(triton.next_power_of_2(args["n_cols"]), 256),
    "ONE_BLOCK": lambda args: args["n_cols"] <= 256,
})
@triton.jit
def _l2_normalize_kernel(x_ptr, y_ptr, stride_x, stride_y, n_cols, eps,
                         BLOCK: tl.constexpr, ONE_BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x
    y_row = y_ptr + row * stride_y
    if ONE_BLOCK:
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        norm = tl.math.sqrt(tl.sum(x * x, axis=0))
        tl.store(y_row + cols, x / tl.maximum(norm, eps), mask=mask)
    else:
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            x = tl.load(x_row + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
            acc += x * x
        norm = tl.math.sqrt(tl.sum(acc, axis=0))
        denom = tl.maximum(norm, eps)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < n_cols
            x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(y_row + cols, x / denom, mask=mask)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    n_cols = x.shape[-1]
    x2d = x.reshape(-1, n_cols)
    if x2d.stride(-1) != 1:
        x2d = x2d.contiguous()
    y = torch.empty_like(x2d)
    _l2_normalize_kernel[(x2d.shape[0],)](x2d, y, x2d.stride(0), y.stride(0), n_cols, eps)
    return y.view(x.shape)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2_normalize(x)
