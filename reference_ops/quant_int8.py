"""Integer-activation formats: LLM.int8 (vector-wise int8 with fp16 outlier columns) and W4A8
(int8 per-token activations, int4 per-channel weights). Plain PyTorch.

Integer products are formed in fp32: every int8 x int8 / int8 x int4 product and every partial
sum below 2^24 is exact there, which holds for these shapes (int8 x int4 sums over K <= 16k are
bounded by 127 * 8 * 16384 < 2^24; int8 x int8 sums of random data stay far below it).
"""

from __future__ import annotations

import torch

__all__ = [
    "int8_quantize_rowwise", "llm_int8_matmul",
    "int4_quantize_per_channel", "pack_int4_signed", "unpack_int4_signed", "w4a8_gemm",
]


def int8_quantize_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax int8 per row. x: [R, C] -> (q [R, C] int8, scale [R] fp32), x ~= q * scale[:, None]."""
    xf = x.float()
    scale = xf.abs().amax(-1).clamp_min(1e-12) / 127  # [R]
    q = torch.round(xf / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def llm_int8_matmul(x: torch.Tensor, cb: torch.Tensor, scb: torch.Tensor, threshold: float) -> torch.Tensor:
    """LLM.int8 (bitsandbytes' mixed-precision decomposition), exact in fp32.

    x: [M, K] fp16; cb: [N, K] int8 weight codes; scb: [N] fp32 absmax per weight row, so
    W = cb * scb[:, None] / 127. Outlier columns are those where any |x[:, k]| > threshold.
      * outliers: x[:, out] (fp16 values) @ W[:, out]^T
      * the rest: x with outlier columns zeroed, int8-quantized per row (absmax / 127,
        round half to even), integer matmul with cb, rescaled by sx[m] * scb[n] / 127.
    Returns [M, N] in x's dtype."""
    xf = x.float()  # [M, K]
    outlier = (xf.abs() > threshold).any(0)  # [K]
    x_in = xf.masked_fill(outlier, 0.0)
    sx = x_in.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127  # [M, 1]
    xq = torch.round(x_in / sx).clamp(-127, 127)  # [M, K] int8 values
    w_scale = scb.float() / 127  # [N]
    y = (xq @ cb.float().t()) * sx * w_scale[None, :]  # [M, N]
    w_out = cb[:, outlier].float() * w_scale[:, None]  # [N, n_outliers]
    y = y + xf[:, outlier] @ w_out.t()
    return y.to(x.dtype)


def int4_quantize_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int4 per output row. w: [N, K] -> (q [N, K] int8 in [-8, 7], scale [N] fp32)."""
    s = w.abs().amax(-1).clamp_min(1e-6) / 7  # [N]
    q = torch.round(w / s[:, None]).clamp(-8, 7).to(torch.int8)
    return q, s


def pack_int4_signed(q: torch.Tensor) -> torch.Tensor:
    """q: [N, K] int in [-8, 7] -> [N, K/2] uint8; element 2j in the low nibble, 2j+1 in the high,
    each as 4-bit two's complement."""
    assert q.shape[-1] % 2 == 0
    u = (q.to(torch.int16) & 0xF).to(torch.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack_int4_signed(packed: torch.Tensor) -> torch.Tensor:
    """[N, K/2] uint8 -> [N, K] int32 in [-8, 7]."""
    nib = torch.stack([packed & 0xF, packed >> 4], dim=-1).flatten(-2).to(torch.int32)
    return nib - ((nib & 0x8) << 1)  # sign-extend 4-bit two's complement


def w4a8_gemm(xq: torch.Tensor, x_scale: torch.Tensor, wq_packed: torch.Tensor, w_scale: torch.Tensor,
              out_dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """(xq @ wq^T) * x_scale[:, None] * w_scale[None, :]. xq: [M, K] int8, x_scale: [M] fp32,
    wq_packed: [N, K/2] uint8 (signed int4), w_scale: [N] fp32 -> [M, N] ``out_dtype``."""
    wq = unpack_int4_signed(wq_packed).float()  # [N, K]
    acc = xq.float() @ wq.t()  # exact integer sums (see module docstring)
    return (acc * x_scale.float()[:, None] * w_scale.float()[None, :]).to(out_dtype)
