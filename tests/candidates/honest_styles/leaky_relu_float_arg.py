"""Leaky ReLU with the slope as a float kernel argument, through a generic elementwise launcher
shared by several activations (a dict of kernels keyed by name).

Problem: level1/leaky_relu
Style: float scalar kernel argument; a registry dict of @triton.jit kernels looked up by
    name; typing.Callable/Optional annotations; int64 offsets; a grid lambda over meta
Expected: correct
"""

from typing import Optional

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _leaky_relu_kernel(x_ptr, y_ptr, n, slope, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(y_ptr + offs, tl.where(x >= 0, x, x * slope), mask=mask)


@triton.jit
def _relu6_kernel(x_ptr, y_ptr, n, unused, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(y_ptr + offs, tl.minimum(tl.maximum(x, 0.0), 6.0), mask=mask)


_ACTIVATIONS = {"leaky_relu": _leaky_relu_kernel, "relu6": _relu6_kernel}


def elementwise(name: str, x: torch.Tensor, scalar: Optional[float] = None,  # noqa: UP045
                block: int = 1024) -> torch.Tensor:
    kernel = _ACTIVATIONS[name]
    xc = x.contiguous()
    y = torch.empty_like(xc)
    n = xc.numel()
    kernel[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](
        xc, y, n, 0.0 if scalar is None else float(scalar), BLOCK=block)
    return y


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.negative_slope = 0.01

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return elementwise("leaky_relu", x, self.negative_slope)
