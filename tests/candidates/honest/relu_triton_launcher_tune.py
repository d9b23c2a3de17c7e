"""Honest: a 2-D strided Triton ReLU behind a launcher function, with TUNE knobs.

The tuner may set the module globals BLOCK_ROWS, BLOCK_COLS and num_warps. The launcher also
exercises plain Python a policy must not mistake for tensor compute: lists, dicts, strings,
shape arithmetic.

Problem: level1/relu
Expected: passes policy; correct
"""

import math

import torch
import torch.nn as nn
import triton
import triton.language as tl

BLOCK_ROWS = 4
BLOCK_COLS = 256
num_warps = 4
TUNE = {"BLOCK_ROWS": [1, 2, 4, 8], "BLOCK_COLS": [128, 256, 512, 1024], "num_warps": [2, 4, 8]}


@triton.jit
def _relu_2d(x_ptr, y_ptr, rows, cols, stride_xr, stride_xc, stride_yr, stride_yc,
             BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (r[:, None] < rows) & (c[None, :] < cols)
    x = tl.load(x_ptr + r[:, None] * stride_xr + c[None, :] * stride_xc, mask=mask, other=0.0)
    y = tl.maximum(x, 0.0)
    tl.store(y_ptr + r[:, None] * stride_yr + c[None, :] * stride_yc, y, mask=mask)


def relu_2d(x: torch.Tensor) -> torch.Tensor:
    """ReLU of any tensor, viewed as [rows, last dim] (strided rows are fine)."""
    shape = list(x.shape)
    cols = shape[-1] if shape else 1
    rows = math.prod(shape[:-1]) if len(shape) > 1 else 1
    x2 = x.reshape(rows, cols)
    y2 = torch.empty((rows, cols), dtype=x.dtype, device=x.device)
    meta = {"BLOCK_R": BLOCK_ROWS, "BLOCK_C": BLOCK_COLS}
    launches = []
    grid = (triton.cdiv(rows, meta["BLOCK_R"]), triton.cdiv(cols, meta.get("BLOCK_C", 256)))
    launches.append(grid)
    _relu_2d[grid](x2, y2, rows, cols, x2.stride(0), x2.stride(1), y2.stride(0), y2.stride(1),
                   num_warps=num_warps, **meta)
    tag = ", ".join(f"{k}={v}" for k, v in sorted(meta.items()))
    assert tag.split(", ")[0].startswith("BLOCK"), tag
    assert launches.index(grid) == 0 and launches.count(grid) == 1
    return y2.view(shape)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0 or x.shape[-1] * 1 == 0:
            return torch.empty_like(x)
        return relu_2d(x)
