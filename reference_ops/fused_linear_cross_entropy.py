"""Linear projection to a vocabulary followed by per-token cross-entropy (an LM head's loss).

Eager materializes the logits ``[T, V]`` (bf16, then a float32 copy and float32 log-probs: with
T = 4096 and V = 128256 that is ~5 GB of intermediates); a fused kernel (Liger's
FusedLinearCrossEntropy) streams over vocabulary chunks and never stores them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["linear_cross_entropy"]


def linear_cross_entropy(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Per-token loss ``logsumexp(z) - z[target]`` with ``z = h @ weight^T`` (rounded to h's dtype,
    as eager does), computed in float32; 0 where ``targets == ignore_index``.

    h: [T, H]; weight: [V, H]; targets: [T] int64 -> loss: [T] float32.
    """
    logits = F.linear(h, weight)  # [T, V] in h's dtype
    return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index, reduction="none")
