"""Rotary position embeddings (RoPE), as vLLM and HF apply them.

The cos/sin values come from a cache ``[max_pos, rot_dim]`` (first half cos, second half sin,
vLLM's ``cos_sin_cache`` layout) computed once in float64 and stored in float32, so that a
kernel gathers the same numbers the reference uses instead of re-deriving ``pos * inv_freq``
(whose float32 rounding at positions ~1e5 moves the angle by ~1e-2 rad).

Two pairings of the rotated dimensions exist:
  * NeoX / Llama / Qwen ("rotate half"): dimension i pairs with i + D/2;
  * GPT-J / DeepSeek MLA ("interleaved"): dimension 2i pairs with 2i + 1.
"""

from __future__ import annotations

import torch

__all__ = ["rope_cache", "rope_cos_sin", "apply_rope"]


def rope_cache(max_pos: int, rot_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """``[max_pos, rot_dim]`` float32: ``cos(p * f_i)`` then ``sin(p * f_i)``, i < rot_dim/2."""
    assert rot_dim % 2 == 0, "rotary dimension must be even"
    inv_freq = 1.0 / theta ** (torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim)
    freqs = torch.outer(torch.arange(max_pos, dtype=torch.float64), inv_freq)  # [P, rot/2]
    return torch.cat([freqs.cos(), freqs.sin()], dim=-1).float()


def rope_cos_sin(cache: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin: ``[*positions.shape, rot_dim/2]`` float32, gathered from ``cache``."""
    cs = cache[positions.long()]  # [..., rot_dim]
    half = cs.shape[-1] // 2
    return cs[..., :half], cs[..., half:]


def apply_rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool = False
) -> torch.Tensor:
    """Rotate the last dimension of ``x`` (size 2 * cos.shape[-1]) in float32, return x's dtype.

    x: [..., D]; cos, sin: broadcastable to [..., D/2] (e.g. [T, 1, D/2] against [T, H, D]).
    """
    half = x.shape[-1] // 2
    assert cos.shape[-1] == half, f"rotary dim {2 * cos.shape[-1]} != head dim {x.shape[-1]}"
    xf = x.float()
    if interleaved:
        x1, x2 = xf[..., 0::2], xf[..., 1::2]  # pairs (2i, 2i+1)
        out = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)
    else:
        x1, x2 = xf[..., :half], xf[..., half:]  # pairs (i, i + D/2)
        out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.to(x.dtype)
