"""amax over dim 0 of [rows, cols]: programs own column tiles and reduce down the rows,
keeping a running maximum; NaN propagates as in torch.amax.

Problem: level1/max_dim
Style: column-tile reduction over dim 0 with a grid lambda; NaN propagation written
    explicitly; int64 offsets; autotune over tile shapes keyed on the sizes
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.autotune(
    configs=[triton.Config({"BLOCK_R": r, "BLOCK_C": c}) for r, c in ((32, 32), (16, 64), (64, 16))],
    key=["n_rows", "n_cols"],
)
@triton.jit
def _amax_dim0_kernel(x_ptr, out_ptr, n_rows, n_cols, stride_r, BLOCK_R: tl.constexpr,
                      BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    cols = pid * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < n_cols
    best = tl.full((BLOCK_C,), -float("inf"), tl.float32)
    seen_nan = tl.zeros((BLOCK_C,), tl.int32)
    for r0 in range(0, n_rows, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        m = (rows[:, None] < n_rows) & cmask[None, :]
        x = tl.load(x_ptr + rows[:, None].to(tl.int64) * stride_r + cols[None, :], mask=m,
                    other=-float("inf")).to(tl.float32)
        seen_nan = tl.maximum(seen_nan, tl.max((x != x).to(tl.int32), axis=0))
        best = tl.maximum(best, tl.max(tl.where(x != x, -float("inf"), x), axis=0))
    out = tl.where(seen_nan > 0, float("nan"), best)
    tl.store(out_ptr + cols, out.to(out_ptr.dtype.element_ty), mask=cmask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        n_rows, n_cols = x.shape
        out = torch.empty(n_cols, dtype=x.dtype, device=x.device)

        def grid(meta):
            return (triton.cdiv(n_cols, meta["BLOCK_C"]),)

        _amax_dim0_kernel[grid](x, out, n_rows, n_cols, x.stride(0))
        return out
