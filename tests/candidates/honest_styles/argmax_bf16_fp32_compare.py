"""argmax over the last dim of bf16 logits: values are widened to fp32 (exact) before
comparing, ties resolve to the lowest index; long rows are scanned block by block.

Problem: level1/argmax
Style: bf16 in, fp32 comparison; tl.argmax within a block plus a running (value, index) pair
    across blocks; int64 indices and offsets; output dtype torch.int64
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _argmax_rows_kernel(x_ptr, out_ptr, n_cols, stride, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    best_val = -float("inf")
    best_idx = tl.zeros((), tl.int64)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * stride + cols, mask=cols < n_cols, other=-float("inf"))
        x = x.to(tl.float32)
        blk_max = tl.max(x, axis=0)
        # lowest index holding the block maximum
        blk_idx = tl.min(tl.where(x == blk_max, cols, n_cols), axis=0).to(tl.int64)
        take = blk_max > best_val
        best_idx = tl.where(take, blk_idx, best_idx)
        best_val = tl.maximum(best_val, blk_max)
    tl.store(out_ptr + row, best_idx)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, x.shape[-1]).contiguous()
        out = torch.empty(x2d.shape[0], dtype=torch.int64, device=x.device)
        block = min(triton.next_power_of_2(x2d.shape[1]), 1024)
        _argmax_rows_kernel[(x2d.shape[0],)](x2d, out, x2d.shape[1], x2d.stride(0), BLOCK=block)
        return out.view(x.shape[:-1])
