"""Causal grouped-query attention over a whole prompt (prefill), Llama-3 style."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["gqa_causal_prefill", "gqa_causal_prefill_math"]


def gqa_causal_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q: [B, Hq, S, D], k and v: [B, Hkv, S, D] -> o: [B, Hq, S, D].

    Query head h reads kv head h // (Hq // Hkv); query i attends to keys 0..i; scale 1/sqrt(D).
    """
    b, hq, s, d = q.shape
    hkv = k.shape[1]
    assert hq % hkv == 0 and k.shape == v.shape == (b, hkv, s, d)
    k = k.repeat_interleave(hq // hkv, dim=1)  # [B, Hq, S, D]
    v = v.repeat_interleave(hq // hkv, dim=1)  # [B, Hq, S, D]
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def gqa_causal_prefill_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same, written out in fp32 (materializes [B, Hq, S, S]: small shapes only)."""
    b, hq, s, d = q.shape
    group = hq // k.shape[1]
    k = k.float().repeat_interleave(group, dim=1)  # [B, Hq, S, D]
    v = v.float().repeat_interleave(group, dim=1)  # [B, Hq, S, D]
    scores = q.float() @ k.transpose(-1, -2) / math.sqrt(d)  # [B, Hq, S, S]
    causal = torch.ones(s, s, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    return (scores.softmax(dim=-1) @ v).to(q.dtype)  # [B, Hq, S, D]
