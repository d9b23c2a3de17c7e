"""Normalization references whose PyTorch spelling is more than one call.

Statistics are computed in fp32 whatever the input dtype; the result is cast back to the
input dtype once, at the end.
"""

from __future__ import annotations

import torch

__all__ = ["rms_norm"]

Tensor = torch.Tensor


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """Llama's RMSNorm: ``x / sqrt(mean(x^2) + eps) * weight`` over the last dim."""
    # x: [..., D], weight: [D]
    assert weight.shape == x.shape[-1:], (weight.shape, x.shape)
    xf = x.float()
    inv_rms = torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)  # [..., 1]
    return (xf * inv_rms * weight.float()).to(x.dtype)
