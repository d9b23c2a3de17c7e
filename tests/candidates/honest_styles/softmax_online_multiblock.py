"""Row softmax with a single-block kernel for short rows and an online (running max and sum)
multi-block kernel for long rows; launch settings come from an lru_cache'd helper that reads
the device's properties when there is a GPU.

Problem: level1/softmax
Style: functools.lru_cache on a settings helper reading device properties; torch.cuda probes;
    multi-block fallback for long rows; two kernels and a launcher; int64 offsets;
    integer arithmetic on shapes
Expected: correct
"""

import functools

import torch
import torch.nn as nn
import triton
import triton.language as tl


@functools.lru_cache(maxsize=8)
def _device_limits(device_index: int) -> tuple[int, int]:
    """(number of SMs, largest single-block row) for a device; CPU runs get fixed values."""
    if torch.cuda.is_available() and device_index >= 0:
        props = torch.cuda.get_device_properties(device_index)
        return props.multi_processor_count, 16384
    return 1, 1024


@triton.jit
def _softmax_single_block(x_ptr, y_ptr, n_cols, stride_x, stride_y, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=-float("inf")).to(tl.float32)
    x = x - tl.max(x, axis=0)
    num = tl.exp(x)
    tl.store(y_ptr + row * stride_y + cols, num / tl.sum(num, axis=0), mask=mask)


@triton.jit
def _softmax_online(x_ptr, y_ptr, n_cols, stride_x, stride_y, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x
    y_row = y_ptr + row * stride_y
    m = tl.full((BLOCK,), -float("inf"), tl.float32)
    d = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_row + cols, mask=cols < n_cols, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        scale = tl.where(m_new == -float("inf"), 0.0, tl.exp(m - m_new))
        d = d * scale + tl.where(cols < n_cols, tl.exp(x - m_new), 0.0)
        m = m_new
    row_max = tl.max(m, axis=0)
    denom = tl.sum(tl.where(m == -float("inf"), 0.0, d * tl.exp(m - row_max)), axis=0)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_row + cols, mask=mask, other=-float("inf")).to(tl.float32)
        tl.store(y_row + cols, tl.exp(x - row_max) / denom, mask=mask)


def softmax(x: torch.Tensor) -> torch.Tensor:
    n_cols = x.shape[-1]
    x2d = x.reshape(-1, n_cols)
    if not x2d.is_contiguous():
        x2d = x2d.contiguous()
    y = torch.empty_like(x2d)
    index = x.device.index if x.is_cuda else -1
    _, max_single = _device_limits(index if index is not None else 0)
    block = triton.next_power_of_2(n_cols)
    num_warps = 4 if block <= 2048 else 8
    if block <= max_single:
        _softmax_single_block[(x2d.shape[0],)](x2d, y, n_cols, x2d.stride(0), y.stride(0),
                                               BLOCK=block, num_warps=num_warps)
    else:
        _softmax_online[(x2d.shape[0],)](x2d, y, n_cols, x2d.stride(0), y.stride(0),
                                         BLOCK=max_single, num_warps=num_warps)
    return y.view(x.shape)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return softmax(x)
