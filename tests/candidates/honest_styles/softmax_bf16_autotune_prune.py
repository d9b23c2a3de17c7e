"""bf16 softmax whose block size and warps are autotuned per row length, with configs pruned
before benchmarking (too small to cover the row, or too many warps for the block).

Problem: level1/softmax_bf16
Style: @triton.autotune with prune_configs_by={"early_config_prune": ...}; bf16 in, fp32
    accumulation; dtype of the output taken from its pointer; logging of the pruning;
    multi-block loop when the row exceeds every config
Expected: correct
"""

import logging

import torch
import torch.nn as nn
import triton
import triton.language as tl

log = logging.getLogger("kbench.examples.softmax_bf16")


def _prune(configs, named_args, **kwargs):
    n_cols = named_args["n_cols"]
    covering = [c for c in configs if c.kwargs["BLOCK"] >= min(n_cols, 8192)]
    kept = [c for c in (covering or configs) if c.num_warps * 32 <= c.kwargs["BLOCK"]]
    log.debug("softmax_bf16: %d of %d configs kept for n_cols=%d", len(kept), len(configs), n_cols)
    return kept or configs[:1]


@triton.autotune(
    configs=[triton.Config({"BLOCK": b}, num_warps=w) for b in (256, 1024, 4096, 8192)
             for w in (4, 8, 16)],
    key=["n_cols"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.jit
def _softmax_bf16_kernel(x_ptr, y_ptr, n_rows, n_cols, stride, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = row * stride
    m = tl.full((BLOCK,), -float("inf"), tl.float32)
    s = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + base + cols, mask=cols < n_cols, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        alpha = tl.where(m_new == -float("inf"), 0.0, tl.exp(m - m_new))
        s = s * alpha + tl.where(cols < n_cols, tl.exp(x - m_new), 0.0)
        m = m_new
    mx = tl.max(m, axis=0)
    total = tl.sum(tl.where(m == -float("inf"), 0.0, s * tl.exp(m - mx)), axis=0)
    inv = 1.0 / total
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_ptr + base + cols, mask=mask, other=-float("inf")).to(tl.float32)
        tl.store(y_ptr + base + cols, (tl.exp(x - mx) * inv).to(y_ptr.dtype.element_ty), mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.view(-1, x.shape[-1]).contiguous()
        n_rows, n_cols = x2d.shape
        y = torch.empty_like(x2d)
        _softmax_bf16_kernel[(n_rows,)](x2d, y, n_rows, n_cols, x2d.stride(0))
        return y.view_as(x)
