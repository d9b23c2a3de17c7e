"""An honest Triton candidate for ``level1/relu``, as source text: one masked elementwise
kernel over the flattened input, 256 elements a program. Tests verify it as it is, or edit it
with ``str.replace`` on a line they name (``"BLOCK = 256\\n"``, ``"        x = x.contiguous()\\n"``).

    from tests.fakes.relu import RELU
    v = verify(load("level1/relu")[0], RELU, device="cpu")  # CORRECT
"""

from __future__ import annotations

__all__ = ["RELU", "RELU_KERNEL"]

# Imports, BLOCK and the kernel, without a ModelNew.
RELU_KERNEL = '''
import torch
import torch.nn as nn
import triton
import triton.language as tl

BLOCK = 256


@triton.jit
def _relu(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(y_ptr + offs, tl.maximum(x, 0.0), mask=mask)
'''

# The whole candidate: RELU_KERNEL and the ModelNew that launches it.
RELU = RELU_KERNEL + '''

class ModelNew(nn.Module):
    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        n = x.numel()
        _relu[(triton.cdiv(n, BLOCK),)](x, y, n, BLOCK=BLOCK)
        return y
'''
