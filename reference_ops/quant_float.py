"""Low-bit floating-point formats: FP8 e4m3 scaled matmul and FP6 e3m2 (FP6-LLM) weights.
Plain PyTorch; references dequantize exactly to fp32, matmul in fp32, then cast.
"""

from __future__ import annotations

import torch

__all__ = [
    "FP8_MAX", "fp8_quantize_rowwise", "fp8_rowwise_mm",
    "FP6_E3M2_MAX", "fp6_e3m2_table", "fp6_quantize", "pack_fp6", "unpack_fp6",
    "fp6_dequantize", "fp6_gemm",
]

FP8_MAX = 448.0  # largest finite float8_e4m3fn


def fp8_quantize_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [R, C] float -> (q [R, C] float8_e4m3fn, scale [R] fp32) with x ~= q * scale[:, None]."""
    scale = x.float().abs().amax(-1).clamp_min(1e-12) / FP8_MAX  # [R]
    q = (x.float() / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale


def fp8_rowwise_mm(xq: torch.Tensor, x_scale: torch.Tensor, wq: torch.Tensor, w_scale: torch.Tensor,
                   out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """(xq @ wq^T) * x_scale[:, None] * w_scale[None, :] in fp32, cast to ``out_dtype``.
    xq: [M, K] e4m3, x_scale: [M] fp32, wq: [N, K] e4m3, w_scale: [N] fp32 -> [M, N]."""
    acc = xq.float() @ wq.float().t()  # [M, N]; products of e4m3 values are exact in fp32
    return (acc * x_scale.float()[:, None] * w_scale.float()[None, :]).to(out_dtype)


# ---------------------------------------------------------------------------------------
# FP6 e3m2: 1 sign bit, 3 exponent bits (bias 3), 2 mantissa bits; no Inf/NaN.
#   code = s eee mm (bit 5 = sign); e = 0: (-1)^s * m/4 * 2^-2 (subnormal); else (-1)^s * (1 + m/4) * 2^(e-3)
# ---------------------------------------------------------------------------------------
FP6_E3M2_MAX = 28.0


def fp6_e3m2_table(device: torch.device | str | None = None) -> torch.Tensor:
    """The 64 values of FP6 e3m2, indexed by code (fp32)."""
    code = torch.arange(64, device=device)
    sign = 1.0 - 2.0 * ((code >> 5) & 1).float()
    e = ((code >> 2) & 0x7).float()
    m = (code & 0x3).float()
    mag = torch.where(e == 0, m / 4 * 2.0**-2, (1 + m / 4) * torch.exp2(e - 3))
    return sign * mag


def fp6_quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-row scaled RTN to FP6 e3m2. w: [N, K] -> (codes [N, K] uint8 in [0, 63], scale [N] fp16).
    Magnitude codes 0..31 are monotonic in value, so nearest = bucketize against midpoints."""
    s = (w.abs().amax(-1).clamp_min(1e-6) / FP6_E3M2_MAX).half().float()  # [N]
    r = w / s[:, None]
    mags = fp6_e3m2_table(w.device)[:32]
    mid = (mags[1:] + mags[:-1]) / 2
    mcode = torch.bucketize(r.abs(), mid).clamp(max=31)  # [N, K] in [0, 31]
    code = mcode | ((r < 0).long() << 5)
    return code.to(torch.uint8), s.half()


def pack_fp6(codes: torch.Tensor) -> torch.Tensor:
    """codes: [N, K] 6-bit -> [N, 3K/4] uint8. Four consecutive codes c0..c3 along K form the
    24-bit word c0 | c1 << 6 | c2 << 12 | c3 << 18, stored little-endian as 3 bytes."""
    N, K = codes.shape
    assert K % 4 == 0
    c = codes.to(torch.int32).view(N, K // 4, 4)
    word = c[..., 0] | (c[..., 1] << 6) | (c[..., 2] << 12) | (c[..., 3] << 18)  # [N, K/4]
    b = torch.stack([word & 0xFF, (word >> 8) & 0xFF, (word >> 16) & 0xFF], dim=-1)
    return b.view(N, 3 * K // 4).to(torch.uint8)


def unpack_fp6(packed: torch.Tensor) -> torch.Tensor:
    """[N, 3K/4] uint8 -> codes [N, K] int64 (inverse of :func:`pack_fp6`)."""
    N, L = packed.shape
    assert L % 3 == 0
    b = packed.long().view(N, L // 3, 3)
    word = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)  # [N, K/4]
    c = torch.stack([(word >> (6 * j)) & 0x3F for j in range(4)], dim=-1)
    return c.view(N, 4 * (L // 3))


def fp6_dequantize(packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """-> W [N, K] fp32 = e3m2(code) * scale[n]."""
    code = unpack_fp6(packed)
    return fp6_e3m2_table(packed.device)[code] * scale.float()[:, None]


def fp6_gemm(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # x: [M, K] fp16, W: [N, K] -> [M, N] fp16
    return (x.float() @ fp6_dequantize(packed, scale).t()).to(x.dtype)
