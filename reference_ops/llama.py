"""Llama-family building blocks in plain PyTorch: RMSNorm, SwiGLU, GQA attention, a decoder block.

Precision follows what vLLM / HF run: norms and RoPE in float32 and cast back once; matmuls
in the activation dtype (fp32 accumulation inside the GEMM); attention through SDPA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reference_ops.rope import apply_rope

__all__ = ["rms_norm", "add_rms_norm", "swiglu", "repeat_kv", "gqa_attention", "llama_block"]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last dim, in float32; x's dtype out."""
    xf = x.float()
    inv = torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (xf * inv * weight.float()).to(x.dtype)


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM's fused_add_rms_norm: ``h = x + residual`` (rounded to x's dtype, it is the next
    residual), then ``rms_norm(h)``. Returns (normed, h)."""
    h = x + residual
    return rms_norm(h, weight, eps), h


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` in the activation dtype, as eager Llama's MLP computes it."""
    return F.silu(gate) * up


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """x: [B, Hkv, S, D] -> [B, Hkv * n_rep, S, D]; query head h reads kv head h // n_rep."""
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


def gqa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """q: [B, Hq, S, D]; k, v: [B, Hkv, S, D] -> [B, Hq, S, D], softmax scale 1/sqrt(D)."""
    assert q.shape[1] % k.shape[1] == 0, "query heads must be a multiple of kv heads"
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def llama_block(
    x: torch.Tensor,
    p: dict[str, torch.Tensor],
    cos: torch.Tensor,
    sin: torch.Tensor,
    n_heads: int,
    n_kv_heads: int,
    eps: float,
) -> torch.Tensor:
    """One pre-norm Llama decoder layer over a full causal prefill.

    x: [B, S, H]; p: attn_norm [H], wq [Hq*D, H], wk/wv [Hkv*D, H], wo [H, Hq*D], ffn_norm [H],
    w_gate/w_up [I, H], w_down [H, I]; cos, sin: [S, D/2] (positions 0..S-1).
    """
    b, s, _ = x.shape
    d = p["wq"].shape[0] // n_heads
    h = rms_norm(x, p["attn_norm"], eps)
    q = F.linear(h, p["wq"]).view(b, s, n_heads, d)  # q: [B, S, Hq, D]
    k = F.linear(h, p["wk"]).view(b, s, n_kv_heads, d)  # k: [B, S, Hkv, D]
    v = F.linear(h, p["wv"]).view(b, s, n_kv_heads, d)  # v: [B, S, Hkv, D]
    q = apply_rope(q, cos[:, None], sin[:, None])
    k = apply_rope(k, cos[:, None], sin[:, None])
    o = gqa_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True)
    x = x + F.linear(o.transpose(1, 2).reshape(b, s, n_heads * d), p["wo"])
    h = rms_norm(x, p["ffn_norm"], eps)
    return x + F.linear(swiglu(F.linear(h, p["w_gate"]), F.linear(h, p["w_up"])), p["w_down"])
