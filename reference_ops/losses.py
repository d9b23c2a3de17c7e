"""Per-row loss references (reduction ``"none"`` over rows): one value per token or sample,
so that a kernel's output is a vector whose every element is checked, not one mean that
a constant could approximate.

All math is fp32; results are fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cross_entropy_per_token", "mse_per_row", "kl_div_per_row"]

Tensor = torch.Tensor


def cross_entropy_per_token(logits: Tensor, target: Tensor, ignore_index: int = -100) -> Tensor:
    """``logsumexp(logits[t]) - logits[t, target[t]]``; rows whose target is ``ignore_index``
    give exactly 0."""
    # logits: [T, V] (any float dtype), target: [T] int64 in [0, V) or == ignore_index
    assert logits.dim() == 2 and target.shape == logits.shape[:1]
    return F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")


def mse_per_row(pred: Tensor, target: Tensor) -> Tensor:
    """Mean over the last dim of ``(pred - target)^2``."""
    # pred, target: [B, D] -> [B]
    assert pred.shape == target.shape
    return F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=-1)


def kl_div_per_row(log_q: Tensor, p: Tensor) -> Tensor:
    """``KL(p || q) = sum_v p * (log p - log q)`` per row, with ``0 * log 0 = 0``
    (``torch.nn.functional.kl_div(log_q, p, reduction="none").sum(-1)``)."""
    # log_q: [B, V] log-probabilities, p: [B, V] probabilities -> [B]
    assert log_q.shape == p.shape
    return F.kl_div(log_q.float(), p.float(), reduction="none").sum(dim=-1)
