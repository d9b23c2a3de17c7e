"""Row sum with autotuned block sizes: an early_config_prune drops blocks far larger than the
row, and a small perf model ranks what is left so only the top configs are benchmarked.

Problem: level1/sum_dim
Style: @triton.autotune with prune_configs_by (early_config_prune, perf_model, top_k);
    triton.Config list built with a comprehension; int64 offsets; multi-block loop;
    typing annotations on the launcher
Expected: correct
"""

from typing import Any

import torch
import torch.nn as nn
import triton
import triton.language as tl


def _early_prune(configs: list, named_args: dict[str, Any], **kwargs: Any) -> list:
    n = named_args["n_cols"]
    kept = [c for c in configs if c.kwargs["BLOCK"] <= max(2 * n, 128)]
    return kept or configs[:1]


def _perf_model(n_cols: int, BLOCK: int, num_warps: int = 4, **_: Any) -> float:
    # fewer, fuller iterations are faster; a tiny penalty for idle warps
    iters = triton.cdiv(n_cols, BLOCK)
    return iters + 0.01 * num_warps * 32 / BLOCK


@triton.autotune(
    configs=[triton.Config({"BLOCK": b}, num_warps=w) for b in (128, 256, 512, 1024, 2048)
             for w in (2, 4, 8)],
    key=["n_cols"],
    prune_configs_by={"early_config_prune": _early_prune, "perf_model": _perf_model,
                      "top_k": 3},
)
@triton.jit
def _row_sum_kernel(x_ptr, out_ptr, n_cols, stride, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        acc += tl.load(x_ptr + row * stride + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
    tl.store(out_ptr + row, tl.sum(acc, axis=0))


def row_sum(x: torch.Tensor) -> torch.Tensor:
    x2d = x.reshape(-1, x.shape[-1])
    if x2d.stride(-1) != 1:
        x2d = x2d.contiguous()
    out = torch.empty(x2d.shape[0], dtype=x.dtype, device=x.device)
    _row_sum_kernel[(x2d.shape[0],)](x2d, out, x2d.shape[1], x2d.stride(0))
    return out.view(x.shape[:-1])


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return row_sum(x)
