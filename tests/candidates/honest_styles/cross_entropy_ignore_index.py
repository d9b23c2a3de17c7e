"""Per-token cross-entropy over a large vocabulary: an online logsumexp over the row in fp32,
minus the target logit; rows whose target is ignore_index give 0.

Problem: level1/cross_entropy_128k
Style: Liger-style launcher with Python int arguments (ignore_index comparisons, reduction
    flags); int64 target loads and int64 offsets; bf16 in, fp32 accumulation; constexpr flag
    chosen from a Python enum; autograd Function with ctx attributes
Expected: correct
"""

import enum

import torch
import torch.nn as nn
import triton
import triton.language as tl


class Reduction(enum.IntEnum):
    NONE = 0
    SUM = 1
    MEAN = 2


@triton.jit
def _cross_entropy_fwd(logits_ptr, target_ptr, loss_ptr, n_cols, stride, ignore_index,
                       BLOCK: tl.constexpr, HAS_IGNORE: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    target = tl.load(target_ptr + row).to(tl.int64)
    row_ptr = logits_ptr + row * stride
    m = tl.full((BLOCK,), -float("inf"), tl.float32)
    s = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(row_ptr + cols, mask=cols < n_cols, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        s = s * tl.where(m_new == -float("inf"), 0.0, tl.exp(m - m_new)) + \
            tl.where(cols < n_cols, tl.exp(x - m_new), 0.0)
        m = m_new
    mx = tl.max(m, axis=0)
    lse = mx + tl.log(tl.sum(tl.where(m == -float("inf"), 0.0, s * tl.exp(m - mx)), axis=0))
    safe_target = tl.where(target == ignore_index, 0, target)
    target_logit = tl.load(row_ptr + safe_target).to(tl.float32)
    loss = lse - target_logit
    if HAS_IGNORE:
        loss = tl.where(target == ignore_index, 0.0, loss)
    tl.store(loss_ptr + row, loss)


def cross_entropy_forward(logits, target, ignore_index=-100, reduction=Reduction.NONE):
    assert logits.dim() == 2 and target.dim() == 1 and target.shape[0] == logits.shape[0]
    n_rows, n_cols = logits.shape
    logits = logits if logits.stride(-1) == 1 else logits.contiguous()
    loss = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
    block = min(triton.next_power_of_2(n_cols), 2048)
    _cross_entropy_fwd[(n_rows,)](logits, target, loss, n_cols, logits.stride(0), ignore_index,
                                  BLOCK=block, HAS_IGNORE=ignore_index is not None and
                                  ignore_index < 0)
    if reduction == Reduction.NONE:
        return loss, block
    raise NotImplementedError(f"reduction {Reduction(reduction).name} is not used here")


class CrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, ignore_index, reduction):
        loss, block = cross_entropy_forward(logits, target, ignore_index, reduction)
        ctx.ignore_index = ignore_index
        ctx.reduction = reduction
        ctx.BLOCK = block
        return loss


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.ignore_index = -100

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return CrossEntropyFunction.apply(logits, target, self.ignore_index, int(Reduction.NONE))
