"""SageAttention-style quantized attention as an exact fake-quant computation in fp32.

INT8 Q.K^T with K smoothed by its per-channel mean, FP8 (e4m3) P.V, following SageAttention /
SageAttention2 (Zhang et al., 2024):
  1. k <- k - mean_over_tokens(k) per (batch, head, channel). Softmax is invariant to it:
     every logit of a row moves by the same q.mean(k).
  2. q and k are quantized to int8 per block of tokens (``block_q`` / ``block_k`` consecutive
     tokens of one (batch, head)), symmetric: scale = amax(|x|) / 127, code = round(x / scale)
     (round half to even) clamped to [-127, 127]. A partial last block uses its own tokens.
  3. logits = (q_code . k_code) * scale_q * scale_k * sm_scale; p = exp(logits - row max),
     l = sum(p) in fp32 (unquantized).
  4. p is quantized to e4m3 with the static scale 448 (p * 448 -> e4m3); v is quantized to
     e4m3 per (batch, head, channel): scale = amax over tokens / 448.
  5. out = (p_e4m3 @ v_e4m3) * scale_v / 448 / l.
"""

from __future__ import annotations

import torch

__all__ = ["quantize_int8_per_block", "quantize_e4m3_per_channel", "fake_e4m3", "sage_attention"]

Tensor = torch.Tensor
E4M3_MAX = 448.0


def quantize_int8_per_block(x: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """Symmetric int8 per block of ``block`` tokens. x: [B, H, S, D] fp32.
    Returns (codes as fp32 integers in [-127, 127] [B, H, S, D], scale per token [B, H, S, 1])."""
    B, H, S, D = x.shape
    nb = -(-S // block)
    pad = nb * block - S
    xp = torch.nn.functional.pad(x, (0, 0, 0, pad))  # zeros never raise an amax
    amax = xp.view(B, H, nb, block * D).abs().amax(dim=-1)  # [B, H, nb]
    scale = (amax / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
    scale = scale.repeat_interleave(block, dim=-1)[..., :S, None]  # [B, H, S, 1]
    codes = torch.round(x / scale).clamp(-127, 127)
    return codes, scale


def fake_e4m3(x: Tensor) -> Tensor:
    """Round fp32 to the nearest float8_e4m3fn value (ties to even) and back to fp32."""
    return x.to(torch.float8_e4m3fn).float()


def quantize_e4m3_per_channel(v: Tensor) -> tuple[Tensor, Tensor]:
    """v: [B, H, S, D] fp32 -> (e4m3 values as fp32 [B, H, S, D], scale [B, H, 1, D])."""
    amax = v.abs().amax(dim=2, keepdim=True)  # [B, H, 1, D]
    scale = (amax / E4M3_MAX).clamp_min(torch.finfo(torch.float32).tiny)
    return fake_e4m3(v / scale), scale


def sage_attention(
    q: Tensor, k: Tensor, v: Tensor, block_q: int = 128, block_k: int = 64, q_chunk: int = 1024
) -> Tensor:
    """Non-causal quantized attention (see the module docstring). q, k, v: [B, H, S, D]
    (same head count). Returns [B, H, S, D] fp32."""
    B, H, S, D = q.shape
    assert k.shape == v.shape and k.shape[:2] == (B, H) and k.shape[-1] == D
    sm_scale = D ** -0.5
    k = k.float()
    k = k - k.mean(dim=2, keepdim=True)  # smoothing, per (b, h, channel)
    q_code, q_scale = quantize_int8_per_block(q.float(), block_q)  # [B, H, S, D], [B, H, S, 1]
    k_code, k_scale = quantize_int8_per_block(k, block_k)  # [B, H, Sk, D], [B, H, Sk, 1]
    v_e4m3, v_scale = quantize_e4m3_per_channel(v.float())  # [B, H, Sk, D], [B, H, 1, D]
    outs = []
    for q0 in range(0, S, q_chunk):  # chunks only bound memory; each row is independent
        q1 = min(q0 + q_chunk, S)
        # integer dot products below 2**24 in magnitude are exact in fp32 (D * 127**2 < 2**24)
        s = q_code[:, :, q0:q1] @ k_code.transpose(-1, -2)  # [B, H, C, Sk]
        s = s * (q_scale[:, :, q0:q1] * sm_scale) * k_scale.transpose(-1, -2)
        p = torch.exp(s - s.amax(dim=-1, keepdim=True))  # in (0, 1]
        row_sum = p.sum(dim=-1, keepdim=True)  # [B, H, C, 1]
        p_e4m3 = fake_e4m3(p * E4M3_MAX)
        outs.append((p_e4m3 @ v_e4m3) * (v_scale / E4M3_MAX) / row_sum)
    return torch.cat(outs, dim=2)
