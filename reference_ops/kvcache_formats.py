"""Compressed KV-cache formats: KIVI 2-bit (K per-channel, V per-token), bitmap-sparse
(Mustafar-style) and low-rank (MatryoshkaKV-style) caches, with exact fp32 decompression.
Plain PyTorch, gpt-fast style. Cache tensors use HF's [B, H, S, D] layout.
"""

from __future__ import annotations

import torch

__all__ = [
    "pack_2bit", "unpack_2bit", "kivi_quantize_keys", "kivi_quantize_values", "kivi_quant_pack",
    "kivi_dequant_keys", "kivi_dequant_values", "kivi_key_t", "kivi_value_t", "codes_reason",
    "sparsify_rows", "bitmap_densify", "lowrank_reconstruct",
]


# ---------------------------------------------------------------------------------------
# KIVI: asymmetric 2-bit, x ~= mn + code * scale, code = round_half_even((x - mn) / scale)
# ---------------------------------------------------------------------------------------
def pack_2bit(codes: torch.Tensor, dim: int) -> torch.Tensor:
    """Pack 2-bit codes 4 to a uint8 along ``dim``: element 4i + j sits at bits [2j, 2j + 2) of byte i."""
    c = codes.movedim(dim, -1).to(torch.uint8)
    *lead, n = c.shape
    assert n % 4 == 0, f"packed axis ({n}) must be a multiple of 4"
    c = c.reshape(*lead, n // 4, 4)
    b = c[..., 0] | (c[..., 1] << 2) | (c[..., 2] << 4) | (c[..., 3] << 6)
    return b.movedim(-1, dim)


def unpack_2bit(packed: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse of :func:`pack_2bit`: uint8 -> codes in [0, 3] (uint8), 4x longer along ``dim``."""
    p = packed.movedim(dim, -1)
    c = torch.stack([(p >> (2 * j)) & 0x3 for j in range(4)], dim=-1)  # [..., n/4, 4]
    return c.reshape(*p.shape[:-1], -1).movedim(-1, dim)


def _codes(x: torch.Tensor, mn: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant group: all codes 0
    return torch.round((x - mn) / safe).clamp(0, 3)


def kivi_quantize_keys(k: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel key quantization over groups of G consecutive tokens. Only whole groups are
    quantized: Sq = (S // G) * G. k: [B, H, S, D] -> codes [B, H, Sq, D] (values 0..3),
    scale, mn [B, H, Sq/G, D] fp32 with scale = (max - min) / 3 over the group's tokens."""
    B, H, S, D = k.shape
    G = group_size
    n = S // G
    x = k[:, :, : n * G].float().view(B, H, n, G, D)
    mn = x.amin(3)  # [B, H, n, D]
    scale = (x.amax(3) - mn) / 3
    codes = _codes(x, mn[:, :, :, None], scale[:, :, :, None])
    return codes.view(B, H, n * G, D), scale, mn


def kivi_quantize_values(v: torch.Tensor, group_size: int, n_tokens: int) -> tuple[torch.Tensor, ...]:
    """Per-token value quantization over groups of G consecutive channels, for the first n_tokens.
    v: [B, H, S, D] -> codes [B, H, n_tokens, D] (0..3), scale, mn [B, H, n_tokens, D/G] fp32."""
    B, H, S, D = v.shape
    G = group_size
    assert D % G == 0
    x = v[:, :, :n_tokens].float().view(B, H, n_tokens, D // G, G)
    mn = x.amin(-1)  # [B, H, T, D/G]
    scale = (x.amax(-1) - mn) / 3
    codes = _codes(x, mn[..., None], scale[..., None])
    return codes.view(B, H, n_tokens, D), scale, mn


def kivi_quant_pack(k: torch.Tensor, v: torch.Tensor, group_size: int) -> tuple[torch.Tensor, ...]:
    """KIVI prefill compression of the first Sq = (S // G) * G tokens (the rest stay in the
    full-precision residual). -> k_codes [B, H, Sq/4, D] uint8 (packed along tokens),
    k_scale, k_min [B, H, Sq/G, D] fp32, v_codes [B, H, Sq, D/4] uint8 (packed along channels),
    v_scale, v_min [B, H, Sq, D/G] fp32."""
    kc, ks, km = kivi_quantize_keys(k, group_size)
    vc, vs, vm = kivi_quantize_values(v, group_size, kc.shape[2])
    return pack_2bit(kc, dim=2), ks, km, pack_2bit(vc, dim=3), vs, vm


def kivi_dequant_keys(k_codes: torch.Tensor, k_scale: torch.Tensor, k_min: torch.Tensor) -> torch.Tensor:
    """[B, H, Sq/4, D] uint8 + [B, H, Sq/G, D] -> keys [B, H, Sq, D] fp32."""
    c = unpack_2bit(k_codes, dim=2).float()  # [B, H, Sq, D]
    B, H, Sq, D = c.shape
    n = k_scale.shape[2]
    x = c.view(B, H, n, Sq // n, D) * k_scale.float()[:, :, :, None] + k_min.float()[:, :, :, None]
    return x.view(B, H, Sq, D)


def kivi_dequant_values(v_codes: torch.Tensor, v_scale: torch.Tensor, v_min: torch.Tensor) -> torch.Tensor:
    """[B, H, T, D/4] uint8 + [B, H, T, D/G] -> values [B, H, T, D] fp32."""
    c = unpack_2bit(v_codes, dim=3).float()  # [B, H, T, D]
    B, H, T, D = c.shape
    ng = v_scale.shape[3]
    x = c.view(B, H, T, ng, D // ng) * v_scale.float()[..., None] + v_min.float()[..., None]
    return x.view(B, H, T, D)


def kivi_key_t(k: torch.Tensor, k_scale: torch.Tensor, k_min: torch.Tensor, group_size: int) -> torch.Tensor:
    """(x - mn) / scale in fp64 for the quantized keys, [B, H, Sq, D]: where a code is decided."""
    B, H, n, D = k_scale.shape
    x = k[:, :, : n * group_size].double().view(B, H, n, group_size, D)
    s = k_scale.double()[:, :, :, None]
    t = (x - k_min.double()[:, :, :, None]) / torch.where(s > 0, s, torch.ones_like(s))
    return t.view(B, H, n * group_size, D)


def kivi_value_t(v: torch.Tensor, v_scale: torch.Tensor, v_min: torch.Tensor) -> torch.Tensor:
    """(x - mn) / scale in fp64 for the quantized values, [B, H, T, D]."""
    B, H, T, ng = v_scale.shape
    x = v[:, :, :T].double().view(B, H, T, ng, -1)
    s = v_scale.double()[..., None]
    t = (x - v_min.double()[..., None]) / torch.where(s > 0, s, torch.ones_like(s))
    return t.view(B, H, T, -1)


def codes_reason(got: torch.Tensor, want: torch.Tensor, t: torch.Tensor, name: str,
                 band: float = 1e-4) -> str | None:
    """Codes must match exactly, except by one step where t = (x - mn) / scale lies within
    ``band`` of a rounding boundary (k + 0.5): there a last-bit difference in the division may
    legitimately round the other way."""
    diff = got.long() - want.long()
    bad = diff != 0
    if not bool(bad.any()):
        return None
    near = ((t - torch.floor(t)) - 0.5).abs() < band
    bad &= ~(near & (diff.abs() == 1))
    if not bool(bad.any()):
        return None
    where = bad.nonzero()[0].tolist()
    return (f"{name}: {int(bad.sum())} of {bad.numel()} codes differ (first at {where}: got "
            f"{int(got[tuple(where)])}, expected {int(want[tuple(where)])}, (x - min) / scale = "
            f"{float(t[tuple(where)]):.6f})")


# ---------------------------------------------------------------------------------------
# Bitmap-sparse rows (Mustafar): per token, a D-bit bitmap + its nonzeros packed in channel order
# ---------------------------------------------------------------------------------------
def sparsify_rows(x: torch.Tensor, nnz: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the nnz largest-magnitude entries of each row (last axis, D a multiple of 8).
    x: [..., D] -> bitmap [..., D/8] uint8 (channel 8i + j at bit j of byte i),
    vals [..., nnz] in x's dtype (kept entries in increasing channel order)."""
    D = x.shape[-1]
    assert D % 8 == 0 and nnz <= D
    idx = x.float().abs().topk(nnz, dim=-1).indices.sort(-1).values  # [..., nnz] ascending channels
    vals = x.gather(-1, idx)
    keep = torch.zeros(x.shape, dtype=torch.bool, device=x.device).scatter_(-1, idx, True)
    bits = keep.view(*x.shape[:-1], D // 8, 8).to(torch.uint8)
    shifts = torch.arange(8, device=x.device, dtype=torch.uint8)
    bitmap = (bits << shifts).sum(-1, dtype=torch.uint8)
    return bitmap, vals


def bitmap_densify(bitmap: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    """bitmap [..., D/8] uint8, vals [..., nnz] -> dense [..., D] fp32: the r-th set bit of a row
    (in channel order) takes vals[..., r]; clear bits are 0."""
    nnz = vals.shape[-1]
    shifts = torch.arange(8, device=bitmap.device, dtype=torch.uint8)
    mask = ((bitmap[..., None] >> shifts) & 1).flatten(-2).bool()  # [..., D]
    rank = (mask.long().cumsum(-1) - 1).clamp(0, nnz - 1)  # position of each set bit in vals
    return torch.where(mask, vals.float().gather(-1, rank), torch.zeros((), device=vals.device))


# ---------------------------------------------------------------------------------------
# Low-rank KV (MatryoshkaKV / Palu style): K_h ~= C_h @ P_h^T with orthonormal P_h
# ---------------------------------------------------------------------------------------
def lowrank_reconstruct(c: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """c: [B, H, S, r] latent cache, p: [H, D, r] per-head up-projection -> [B, H, S, D] fp32."""
    return torch.einsum("bhsr,hdr->bhsd", c.float(), p.float())
