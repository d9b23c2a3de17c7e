"""Hardswish with the launch wrapped in a contextlib context manager that enters the
tensor's CUDA device when there is one (a common multi-GPU idiom) and does nothing on CPU.

Problem: level1/hardswish
Style: contextlib.contextmanager / nullcontext device guard; torch.cuda.device on CUDA
    tensors only; x.is_cuda probe; tl.minimum/tl.maximum clamps; int64 offsets
Expected: correct
"""

import contextlib

import torch
import torch.nn as nn
import triton
import triton.language as tl


@contextlib.contextmanager
def device_guard(t: torch.Tensor):
    ctx = torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
    with ctx:
        yield


@triton.jit
def _hardswish_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = x * tl.minimum(tl.maximum(x + 3.0, 0.0), 6.0) / 6.0
    tl.store(y_ptr + offs, y, mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x.contiguous()
        y = torch.empty_like(xc)
        n = xc.numel()
        with device_guard(xc):
            _hardswish_kernel[(triton.cdiv(n, 1024),)](xc, y, n, BLOCK=1024)
        return y
