"""Standard transformer encoder/decoder layers (ViT, GPT-2, BERT) in plain PyTorch.

Conventions: x is [B, S, H]; a fused QKV weight [3H, H] (rows: q, then k, then v, each head-major);
attention through SDPA with scale 1/sqrt(head_dim); LayerNorm statistics in float32 (F.layer_norm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["init_block_params", "mha", "pre_ln_block", "post_ln_block"]


def init_block_params(
    hidden: int, mlp_dim: int, dtype: torch.dtype, qk_gain: float = 1.5
) -> dict[str, torch.Tensor]:
    """Trained-looking random weights for one layer (uses the global RNG, in a fixed order).

    Linear weights Gaussian with std fan_in^-0.5 (q and k rows times ``qk_gain``, so attention
    is peaked rather than near-uniform), biases std 0.2, LayerNorm gammas in [0.5, 1.5] and
    betas std 0.2: dropping any of them changes the output well beyond bf16 noise.
    """

    def lin(out_f: int, in_f: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(out_f, in_f) * in_f**-0.5, torch.randn(out_f) * 0.2

    def ln(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.rand(n) + 0.5, torch.randn(n) * 0.2

    p: dict[str, torch.Tensor] = {}
    p["ln1_w"], p["ln1_b"] = ln(hidden)
    p["qkv_w"], p["qkv_b"] = lin(3 * hidden, hidden)
    p["qkv_w"][: 2 * hidden] *= qk_gain
    p["proj_w"], p["proj_b"] = lin(hidden, hidden)
    p["ln2_w"], p["ln2_b"] = ln(hidden)
    p["fc1_w"], p["fc1_b"] = lin(mlp_dim, hidden)
    p["fc2_w"], p["fc2_b"] = lin(hidden, mlp_dim)
    return {k: v.to(dtype) for k, v in p.items()}


def mha(
    x: torch.Tensor,
    p: dict[str, torch.Tensor],
    n_heads: int,
    causal: bool = False,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-head self-attention. x: [B, S, H]; key_mask: [B, S] bool, True = may be attended."""
    b, s, hid = x.shape
    d = hid // n_heads
    qkv = F.linear(x, p["qkv_w"], p["qkv_b"]).view(b, s, 3, n_heads, d)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, nh, S, d]
    mask = None if key_mask is None else key_mask[:, None, None, :]  # [B, 1, 1, S]
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    return F.linear(o.transpose(1, 2).reshape(b, s, hid), p["proj_w"], p["proj_b"])


def _ln(x: torch.Tensor, p: dict[str, torch.Tensor], name: str, eps: float) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), p[f"{name}_w"], p[f"{name}_b"], eps)


def _mlp(x: torch.Tensor, p: dict[str, torch.Tensor], gelu: str) -> torch.Tensor:
    return F.linear(F.gelu(F.linear(x, p["fc1_w"], p["fc1_b"]), approximate=gelu), p["fc2_w"], p["fc2_b"])


def pre_ln_block(
    x: torch.Tensor, p: dict[str, torch.Tensor], n_heads: int, eps: float, causal: bool, gelu: str
) -> torch.Tensor:
    """ViT / GPT-2 layer: x + attn(ln1(x)), then + mlp(ln2(x)). gelu: "none" (erf) or "tanh"."""
    x = x + mha(_ln(x, p, "ln1", eps), p, n_heads, causal=causal)
    return x + _mlp(_ln(x, p, "ln2", eps), p, gelu)


def post_ln_block(
    x: torch.Tensor, lengths: torch.Tensor, p: dict[str, torch.Tensor], n_heads: int, eps: float
) -> torch.Tensor:
    """BERT layer over right-padded sequences: ln1(x + attn(x)), then ln2(x + mlp(x)).

    lengths: [B] int64 in [1, S]; keys at positions >= length are masked out, and the outputs
    at those (padding) positions are defined as 0.
    """
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]  # [B, S]
    x = _ln(x + mha(x, p, n_heads, key_mask=valid), p, "ln1", eps)
    x = _ln(x + _mlp(x, p, "none"), p, "ln2", eps)
    return x * valid[..., None].to(x.dtype)
