"""Top-k (k = 64) of each row by repeated selection over one register-resident row: take the
maximum, record its lowest index, knock it out, repeat; values come back sorted descending.

Problem: level1/topk
Style: two outputs (values in the input dtype, int64 indices); bf16 in, exact fp32 compares;
    tl.static_range-free loop over k; a launcher that validates k against the row length and
    falls back to a wider block for long rows
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl

TOP_K = 64


@triton.jit
def _topk_rows_kernel(x_ptr, val_ptr, idx_ptr, n_cols, stride, K: tl.constexpr,
                      BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + row * stride + cols, mask=cols < n_cols, other=-float("inf"))
    x = x.to(tl.float32)
    taken = cols >= n_cols
    for i in range(K):
        cand = tl.where(taken, -float("inf"), x)
        best = tl.max(cand, axis=0)
        pick = tl.min(tl.where((cand == best) & (~taken), cols, BLOCK), axis=0)
        tl.store(val_ptr + row * K + i, best.to(val_ptr.dtype.element_ty))
        tl.store(idx_ptr + row * K + i, pick.to(tl.int64))
        taken = taken | (cols == pick)


def topk_last(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    n_cols = x.shape[-1]
    if not 0 < k <= n_cols:
        raise ValueError(f"k={k} must be in [1, {n_cols}]")
    x2d = x.reshape(-1, n_cols).contiguous()
    rows = x2d.shape[0]
    values = torch.empty((rows, k), dtype=x.dtype, device=x.device)
    indices = torch.empty((rows, k), dtype=torch.int64, device=x.device)
    block = triton.next_power_of_2(n_cols)
    _topk_rows_kernel[(rows,)](x2d, values, indices, n_cols, x2d.stride(0), K=k, BLOCK=block,
                               num_warps=8 if block >= 4096 else 4)
    out_shape = (*x.shape[:-1], k)
    return values.view(out_shape), indices.view(out_shape)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return topk_last(x, TOP_K)
