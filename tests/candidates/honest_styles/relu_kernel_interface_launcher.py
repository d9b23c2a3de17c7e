"""ReLU behind a library-style launch wrapper: a triton.KernelInterface subclass that keys
launch settings on (dtype, size bucket), keeps them in a dict set up in __init__, and
forwards to the JIT function's run.

Problem: level1/relu
Style: launch wrapper subclassing triton.KernelInterface (run(*args, grid, warmup, **kwargs),
    kernel[grid](...) through the inherited __getitem__); attributes set in the wrapper's
    __init__ and a settings cache written in run; getattr with constant names and defaults;
    __repr__/__call__ on the wrapper
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl


class LaunchCache(triton.KernelInterface):
    """Chooses BLOCK/num_warps per (dtype, size bucket) once and reuses the choice."""

    def __init__(self, fn, key_arg: str, candidates=((1024, 4), (4096, 8))):
        self.fn = fn
        self.arg_names = getattr(fn, "arg_names", None) or []
        self.key_index = self.arg_names.index(key_arg)
        self.candidates = tuple(candidates)
        self.settings = {}
        self.launches = 0

    def __repr__(self):
        return f"LaunchCache({getattr(self.fn, '__name__', 'kernel')}, {len(self.settings)} keys)"

    def _choose(self, n: int):
        return self.candidates[0] if n < 1 << 20 else self.candidates[-1]

    def run(self, *args, grid, warmup=False, **kwargs):
        n = int(args[self.key_index])
        first = args[0]
        key = (str(getattr(first, "dtype", None)), n.bit_length())
        if key not in self.settings:
            self.settings[key] = self._choose(n)
        block, warps = self.settings[key]
        self.launches += 1
        if callable(grid):
            grid = grid({"BLOCK": block})
        return self.fn.run(*args, grid=grid, warmup=warmup, BLOCK=block, num_warps=warps, **kwargs)

    def __call__(self, *args, **kwargs):
        raise RuntimeError("launch with kernel[grid](...)")


def launch_cache(key_arg: str):
    def wrap(fn):
        return LaunchCache(fn, key_arg)
    return wrap


@launch_cache(key_arg="n_elements")
@triton.jit
def relu_kernel(x_ptr, y_ptr, n_elements, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(y_ptr + offs, tl.where(x > 0, x, 0.0), mask=mask)


def relu(x: torch.Tensor) -> torch.Tensor:
    x_flat = x.contiguous().view(-1)
    y = torch.empty_like(x_flat)
    n = x_flat.numel()
    relu_kernel[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](x_flat, y, n)
    return y.view_as(x)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu(x)
