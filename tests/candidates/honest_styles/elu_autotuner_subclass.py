"""ELU through a library's own autotuner: a triton.runtime.Autotuner subclass that remembers
pruned config lists per key and exposes a decorator like triton.autotune.

Problem: level1/elu
Style: launch wrapper subclassing triton.runtime.Autotuner (super().__init__ with the base's
    keyword arguments, prune_configs override calling super(), a dict kept on self); the
    decorator factory pattern; float scalar argument (alpha); tl.exp for expm1
Expected: correct
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl
from triton.runtime import Autotuner


class CachingAutotuner(Autotuner):
    """Prunes each key's config list once; later calls with the same key skip pruning."""

    def __init__(self, fn, arg_names, configs, key, prune_configs_by=None):
        super().__init__(fn, arg_names, configs, key, reset_to_zero=None, restore_value=None,
                         prune_configs_by=prune_configs_by)
        self.pruned_by_key = {}

    def prune_configs(self, kwargs):
        key = tuple(self.nargs[k] for k in self.keys if k in self.nargs)
        if key not in self.pruned_by_key:
            self.pruned_by_key[key] = super().prune_configs(kwargs)
        return self.pruned_by_key[key]


def caching_autotune(configs, key, prune_configs_by=None):
    def decorator(fn):
        return CachingAutotuner(fn, fn.arg_names, configs, key, prune_configs_by=prune_configs_by)
    return decorator


def _drop_oversized(configs, named_args, **kwargs):
    n = named_args["n_elements"]
    return [c for c in configs if c.kwargs["BLOCK"] <= max(n, 256)] or configs[:1]


@caching_autotune(
    configs=[triton.Config({"BLOCK": b}, num_warps=w) for b in (256, 1024, 4096) for w in (4, 8)],
    key=["n_elements"],
    prune_configs_by={"early_config_prune": _drop_oversized},
)
@triton.jit
def _elu_kernel(x_ptr, y_ptr, n_elements, alpha, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    neg = alpha * (tl.exp(tl.minimum(x, 0.0)) - 1.0)
    tl.store(y_ptr + offs, tl.where(x > 0.0, x, neg), mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.alpha = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x.contiguous()
        y = torch.empty_like(xc)
        n = xc.numel()
        _elu_kernel[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](xc, y, n, self.alpha)
        return y
