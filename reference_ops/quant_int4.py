"""4-bit weight-only formats (AWQ, GPTQ act-order, symmetric int4, LUT/NF4): quantize, pack,
dequantize, and the reference matmuls. Plain PyTorch, gpt-fast style.

Every dequantizer returns the weight in fp32 in its LOGICAL layout; every reference matmul is
the exact dequantize-then-matmul computation in fp32, cast to the activation dtype at the end.

Packing conventions (a "nibble i" is bits [4i, 4i+4) of a 32-bit word):
  * sequential: 8 consecutive elements along the packed axis, element j in nibble j.
  * AWQ: 8 consecutive output columns 8c..8c+7 in one int32, nibble i holding column
    8c + AWQ_ORDER[i] (i.e. column j sits in nibble AWQ_REVERSE_ORDER[j]).
Packed words are stored as int32 (two's complement: a word whose nibble 7 is >= 8 is negative).
"""

from __future__ import annotations

import torch

__all__ = [
    "AWQ_ORDER", "AWQ_REVERSE_ORDER", "NF4_TABLE",
    "pack_int4", "unpack_int4", "quantize_asym", "quantize_sym",
    "awq_quantize", "awq_dequantize", "awq_gemm",
    "gptq_quantize", "gptq_dequantize", "gptq_gemm",
    "int4_sym_quantize", "int4_sym_dequantize", "int4_sym_gemm",
    "lut4_quantize", "lut4_dequantize", "lut4_gemm",
]

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble i holds logical column AWQ_ORDER[i]
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)  # logical column j lives in nibble AWQ_REVERSE_ORDER[j]

# bitsandbytes' NormalFloat-4 code book (quantiles of N(0, 1) rescaled to [-1, 1]), sorted.
NF4_TABLE = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)


# ---------------------------------------------------------------------------------------
# Bit packing
# ---------------------------------------------------------------------------------------
def _wrap_int32(x: torch.Tensor) -> torch.Tensor:
    # x: int64 in [0, 2^32) -> the int32 with the same bits
    return torch.where(x >= 2**31, x - 2**32, x).to(torch.int32)


def pack_int4(codes: torch.Tensor, dim: int, order: tuple[int, ...] | None = None) -> torch.Tensor:
    """Pack 4-bit codes (ints in [0, 15]) 8 to an int32 along ``dim``.

    Nibble i of a word holds element ``order[i]`` of its 8-element run (sequential if None)."""
    c = codes.movedim(dim, -1).to(torch.int64)
    *lead, n = c.shape
    assert n % 8 == 0, f"packed axis ({n}) must be a multiple of 8"
    assert int(c.min()) >= 0 and int(c.max()) <= 15, "codes must lie in [0, 15]"
    c = c.reshape(*lead, n // 8, 8)  # [..., n/8, 8]: element j of each run
    if order is not None:
        c = c[..., list(order)]  # now nibble i <- element order[i]
    shifts = torch.arange(0, 32, 4, device=c.device, dtype=torch.int64)
    return _wrap_int32((c << shifts).sum(-1)).movedim(-1, dim)


def unpack_int4(packed: torch.Tensor, dim: int, order: tuple[int, ...] | None = None) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: int32 words -> int32 codes in [0, 15], 8x longer along ``dim``."""
    p = packed.movedim(dim, -1)
    shifts = torch.arange(0, 32, 4, device=p.device, dtype=torch.int32)
    nib = (p.unsqueeze(-1) >> shifts) & 0xF  # [..., n/8, 8]: nibble i
    if order is not None:
        inv = [0] * 8
        for i, j in enumerate(order):
            inv[j] = i
        nib = nib[..., inv]  # element j <- nibble inv[j]
    return nib.reshape(*p.shape[:-1], -1).movedim(-1, dim)


# ---------------------------------------------------------------------------------------
# Round-to-nearest quantizers (reduction along ``dim``)
# ---------------------------------------------------------------------------------------
def quantize_asym(w: torch.Tensor, bits: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Min-max asymmetric RTN: w ~= (q - z) * s. Returns (q, s, z); s rounded to fp16 first."""
    qmax = 2**bits - 1
    wmin = w.amin(dim, keepdim=True).clamp(max=0.0)
    wmax = w.amax(dim, keepdim=True).clamp(min=0.0)
    s = ((wmax - wmin).clamp_min(1e-6) / qmax).half().float()
    z = torch.round(-wmin / s).clamp(0, qmax)
    q = torch.clamp(torch.round(w / s) + z, 0, qmax)
    return q, s, z


def quantize_sym(w: torch.Tensor, bits: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ's symmetric RTN: s = 2 * absmax / (2^bits - 1), q = clamp(round(w/s) + 2^(bits-1)).
    Returns (q unsigned with implicit zero 2^(bits-1), s rounded to fp16)."""
    qmax = 2**bits - 1
    amax = w.abs().amax(dim, keepdim=True).clamp_min(1e-6)
    s = (2 * amax / qmax).half().float()
    q = torch.clamp(torch.round(w / s) + 2 ** (bits - 1), 0, qmax)
    return q, s


# ---------------------------------------------------------------------------------------
# AWQ (W4A16, zeros, group along K, AWQ nibble order along N)
# ---------------------------------------------------------------------------------------
def awq_quantize(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w: [K, N] fp32 -> qweight [K, N/8] int32, qzeros [K/G, N/8] int32, scales [K/G, N] fp16."""
    K, N = w.shape
    assert K % group_size == 0 and N % 8 == 0
    q, s, z = quantize_asym(w.view(K // group_size, group_size, N), 4, dim=1)
    qweight = pack_int4(q.view(K, N), dim=1, order=AWQ_ORDER)
    qzeros = pack_int4(z.view(K // group_size, N), dim=1, order=AWQ_ORDER)
    return qweight, qzeros, s.view(K // group_size, N).half()


def awq_dequantize(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """-> W [K, N] fp32 with W[k, n] = (q[k, n] - z[k // G, n]) * s[k // G, n]."""
    q = unpack_int4(qweight, dim=1, order=AWQ_ORDER).float()  # [K, N]
    z = unpack_int4(qzeros, dim=1, order=AWQ_ORDER).float()  # [K/G, N]
    s = scales.float()  # [K/G, N]
    K, N = q.shape
    assert z.shape == s.shape == (K // group_size, N)
    w = (q.view(K // group_size, group_size, N) - z[:, None]) * s[:, None]
    return w.view(K, N)


def awq_gemm(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    # x: [M, K] fp16 -> [M, N] fp16
    w = awq_dequantize(qweight, qzeros, scales, group_size)
    return (x.float() @ w).to(x.dtype)


# ---------------------------------------------------------------------------------------
# GPTQ with act-order (g_idx) and zeros stored as z - 1
# ---------------------------------------------------------------------------------------
def gptq_quantize(w: torch.Tensor, group_size: int, importance: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Act-order RTN in GPTQ's storage format.

    Input channels are visited in descending ``importance`` (GPTQ's Hessian diagonal); the
    i-th visited channel goes to group i // G, so ``g_idx[perm[i]] = i // G``.
    w: [K, N] fp32, importance: [K] -> qweight [K/8, N] int32 (sequential along K),
    qzeros [K/G, N/8] int32 (sequential along N, storing z - 1), scales [K/G, N] fp16, g_idx [K] int32.
    """
    K, N = w.shape
    G = group_size
    assert K % G == 0 and K % 8 == 0 and N % 8 == 0
    perm = torch.sort(importance, descending=True, stable=True).indices  # [K]
    g_idx = torch.empty(K, dtype=torch.int32, device=w.device)
    g_idx[perm] = (torch.arange(K, device=w.device) // G).to(torch.int32)
    q_perm, s, z = quantize_asym(w[perm].view(K // G, G, N), 4, dim=1)
    assert int(z.min()) >= 1, "z - 1 must fit a nibble (the GPTQ storage quirk)"
    q = torch.empty(K, N, device=w.device)
    q[perm] = q_perm.view(K, N)
    qweight = pack_int4(q, dim=0)
    qzeros = pack_int4(z.view(K // G, N) - 1, dim=1)
    return qweight, qzeros, s.view(K // G, N).half(), g_idx


def gptq_dequantize(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor) -> torch.Tensor:
    """-> W [K, N] fp32 with W[k, n] = (q[k, n] - (zs[g, n] + 1)) * s[g, n], g = g_idx[k]."""
    q = unpack_int4(qweight, dim=0).float()  # [K, N]
    z = unpack_int4(qzeros, dim=1).float() + 1  # [n_groups, N]: stored value is z - 1
    g = g_idx.long()
    assert q.shape[0] == g.numel()
    return (q - z[g]) * scales.float()[g]


def gptq_gemm(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor) -> torch.Tensor:
    # x: [M, K] fp16 -> [M, N] fp16
    return (x.float() @ gptq_dequantize(qweight, qzeros, scales, g_idx)).to(x.dtype)


# ---------------------------------------------------------------------------------------
# Symmetric int4 (Marlin's input format before its tile shuffle: uint4 with bias 8)
# ---------------------------------------------------------------------------------------
def int4_sym_quantize(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """w: [K, N] fp32 -> qweight [K/8, N] int32 (sequential along K, u = q + 8), scales [K/G, N] fp16."""
    K, N = w.shape
    assert K % group_size == 0 and K % 8 == 0
    u, s = quantize_sym(w.view(K // group_size, group_size, N), 4, dim=1)
    return pack_int4(u.view(K, N), dim=0), s.view(K // group_size, N).half()


def int4_sym_dequantize(qweight: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """-> W [K, N] fp32 with W[k, n] = (u[k, n] - 8) * s[k // G, n]."""
    u = unpack_int4(qweight, dim=0).float()  # [K, N]
    K, N = u.shape
    s = scales.float()
    assert s.shape == (K // group_size, N)
    return ((u.view(K // group_size, group_size, N) - 8) * s[:, None]).view(K, N)


def int4_sym_gemm(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    # x: [M, K] fp16 -> [M, N] fp16
    return (x.float() @ int4_sym_dequantize(qweight, scales, group_size)).to(x.dtype)


# ---------------------------------------------------------------------------------------
# LUT-quantized 4-bit (FLUTE / NF4): code -> table value, times a per-group scale
# ---------------------------------------------------------------------------------------
def lut4_quantize(w: torch.Tensor, table: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """w: [N, K] fp32, table: [16] sorted values in [-1, 1].
    -> codes [N, K/2] uint8 (element 2j in the low nibble, 2j+1 in the high), scales [N, K/G] fp16.
    Each weight gets the table entry nearest to w / absmax(group)."""
    N, K = w.shape
    G = group_size
    assert K % G == 0 and K % 2 == 0
    t = table.float()
    s = w.view(N, K // G, G).abs().amax(-1).clamp_min(1e-6).half().float()  # [N, K/G]
    r = (w.view(N, K // G, G) / s[..., None]).view(N, K)
    mid = (t[1:] + t[:-1]) / 2  # decision boundaries between neighbouring table entries
    code = torch.bucketize(r, mid)  # [N, K] in [0, 15]
    packed = (code[:, 0::2] | (code[:, 1::2] << 4)).to(torch.uint8)
    return packed, s.half()


def lut4_dequantize(codes: torch.Tensor, table: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """-> W [N, K] fp32 with W[n, k] = table[code[n, k]] * s[n, k // G]."""
    lo = (codes & 0xF).long()
    hi = (codes >> 4).long()
    code = torch.stack([lo, hi], dim=-1).flatten(-2)  # [N, K]: low nibble first
    N, K = code.shape
    w = table.float()[code]
    return (w.view(N, K // group_size, group_size) * scales.float()[..., None]).view(N, K)


def lut4_gemm(x: torch.Tensor, codes: torch.Tensor, table: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    # x: [M, K] fp16, W: [N, K] (nn.Linear layout) -> [M, N] fp16
    return (x.float() @ lut4_dequantize(codes, table, scales, group_size).t()).to(x.dtype)
