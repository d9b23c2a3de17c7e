"""Decode attention over a KV cache (one new query token per sequence), GQA, in fp32.

Head convention (as HF's repeat_kv): query head h reads KV head h // (Hq // Hkv).
Masked positions get probability 0; a row with no valid position outputs 0 (not NaN).
"""

from __future__ import annotations

import math

import torch

__all__ = ["masked_softmax", "decode_attention", "salient_qk"]


def masked_softmax(logits: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last axis in fp32; invalid entries get 0; fully-masked rows are all 0."""
    x = logits.float()
    if valid is not None:
        x = x.masked_fill(~valid, float("-inf"))
    m = x.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(x - m)  # exp(-inf) = 0
    denom = e.sum(-1, keepdim=True)
    return torch.where(denom > 0, e / denom.clamp_min(1e-30), torch.zeros_like(e))


def decode_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    valid: torch.Tensor | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-token attention. q: [B, Hq, D]; k, v: [B, Hkv, S, D]; valid: bool broadcastable to
    [B, Hkv, S] (None = all valid). Returns (out [B, Hq, D] fp32, probs [B, Hq, S] fp32)."""
    B, Hq, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    assert Hq % Hkv == 0 and k.shape[:3] == v.shape[:3]
    G = Hq // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    qf = q.float().view(B, Hkv, G, D)  # [B, Hkv, G, D]
    logits = torch.einsum("bhgd,bhsd->bhgs", qf, k.float()) * scale  # [B, Hkv, G, S]
    mask = None if valid is None else valid.expand(B, Hkv, S)[:, :, None, :]
    p = masked_softmax(logits, mask)  # [B, Hkv, G, S]
    out = torch.einsum("bhgs,bhsd->bhgd", p, v.float())  # [B, Hkv, G, Dv]
    return out.reshape(B, Hq, v.shape[-1]), p.reshape(B, Hq, S)


def salient_qk(batch: int, n_heads: int, n_kv_heads: int, n_q: int, seq_len: int, head_dim: int,
               dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic queries and keys with realistic structure for selection problems: every token t
    has a salience s_t ~ N(0, 1) shared by all heads, and each KV head h a unit direction u_h;
    k_t = z_t + a * s_t * u_h and q = z_q + a * u_h (z ~ N(0, I), a = D^(1/4)), so the logit of
    token t carries s_t (std ~1.4 overall) and the same tokens matter to every query and head.
    Uses torch's global RNG and the current default device.
    -> q [B, Hq, n_q, D], k [B, Hkv, S, D] in ``dtype``."""
    a = head_dim ** 0.25
    u = torch.randn(batch, n_kv_heads, 1, head_dim)
    u = u / u.norm(dim=-1, keepdim=True)  # [B, Hkv, 1, D]
    sal = torch.randn(batch, 1, seq_len, 1)  # [B, 1, S, 1]
    k = torch.randn(batch, n_kv_heads, seq_len, head_dim) + a * sal * u
    u_q = u.repeat_interleave(n_heads // n_kv_heads, dim=1)  # [B, Hq, 1, D]
    q = torch.randn(batch, n_heads, n_q, head_dim) + a * u_q
    return q.to(dtype), k.to(dtype)
