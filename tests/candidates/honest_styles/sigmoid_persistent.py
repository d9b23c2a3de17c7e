"""Sigmoid as a persistent kernel: a fixed number of programs (from the SM count on a GPU,
a small constant on CPU) stride over the tensor's blocks.

Problem: level1/sigmoid
Style: persistent grid with tl.num_programs and a grid-stride loop; lru_cache'd SM count
    from torch.cuda.get_device_properties; int64 offsets; tl.sigmoid
Expected: correct
"""

from functools import lru_cache

import torch
import torch.nn as nn
import triton
import triton.language as tl


@lru_cache(maxsize=None)  # noqa: UP033 - the style under test
def num_programs(device_type: str, index: int) -> int:
    if device_type == "cuda":
        return torch.cuda.get_device_properties(index).multi_processor_count * 4
    return 4


@triton.jit
def _sigmoid_persistent(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    n_blocks = tl.cdiv(n, BLOCK)
    for b in range(pid, n_blocks, nprog):
        offs = b.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + offs, tl.sigmoid(x), mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x.contiguous()
        y = torch.empty_like(xc)
        n = xc.numel()
        block = 1024
        progs = min(num_programs(xc.device.type, xc.device.index or 0), triton.cdiv(n, block))
        _sigmoid_persistent[(max(progs, 1),)](xc, y, n, BLOCK=block)
        return y
