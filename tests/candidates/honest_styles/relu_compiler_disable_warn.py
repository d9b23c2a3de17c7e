"""ReLU launcher decorated with @torch.compiler.disable; torch.compiler.is_compiling() probe;
warnings.warn once through a module-level flag; logger.isEnabledFor guard.

Problem: level1/relu
Style: a bare @torch.compiler.disable decorator, warnings and logging
Expected: correct
"""
from __future__ import annotations

import logging
import warnings

import torch
import torch.nn as nn
import triton
import triton.language as tl

logger = logging.getLogger(__name__)
_WARNED_NONCONTIG = False


@triton.jit
def _relu_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(y_ptr + offs, tl.where(x < 0, 0.0, x), mask=mask)


@torch.compiler.disable
def relu_fwd(x: torch.Tensor) -> torch.Tensor:
    global _WARNED_NONCONTIG
    if not x.is_contiguous():
        if not _WARNED_NONCONTIG:
            warnings.warn("relu_fwd: non-contiguous input is copied", stacklevel=2)
            _WARNED_NONCONTIG = True
        x = x.contiguous()
    y = torch.empty_like(x)
    n = x.numel()
    BLOCK = 1024
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("relu launch n=%d grid=%d compiling=%s", n, triton.cdiv(n, BLOCK),
                     torch.compiler.is_compiling())
    _relu_kernel[(triton.cdiv(n, BLOCK),)](x, y, n, BLOCK=BLOCK)
    return y


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu_fwd(x)
