"""Symmetric int8 quantization with one scale per row, and the KV-cache op built on it.

One row is one token of one head for a KV cache, one token for activations, one output
channel for weights: always the last dimension. ``x ~= codes * scale``.
"""

from __future__ import annotations

import torch

__all__ = ["quantize_int8_rowwise", "dequantize_int8_rowwise", "kv_int8_quant", "check_int8_quant"]

QMAX = 127  # symmetric: codes in [-127, 127], -128 unused
EPS = 1e-8  # floor on a row's absmax, so an all-zero row gets codes 0, not NaN


def quantize_int8_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [..., D] -> (codes: [..., D] int8, scale: [..., 1] fp32)."""
    xf = x.float()
    scale = xf.abs().amax(dim=-1, keepdim=True).clamp(min=EPS) / QMAX  # [..., 1]
    codes = torch.round(xf / scale).clamp(-QMAX, QMAX).to(torch.int8)  # round half to even
    return codes, scale


def dequantize_int8_rowwise(codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """codes: [..., D] int8, scale: [..., 1] fp32 -> [..., D] in ``dtype``."""
    return (codes.float() * scale).to(dtype)


def kv_int8_quant(kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """kv: [B, H, S, D] -> (codes: [B, H, S, D] int8, scale: [B, H, S, 1] fp32), per token and head."""
    assert kv.dim() == 4, f"expected [B, H, S, D], got {tuple(kv.shape)}"
    return quantize_int8_rowwise(kv)


def check_int8_quant(
    out: object,
    ref: tuple[torch.Tensor, torch.Tensor],
    x: torch.Tensor,
    scale_rtol: float = 1e-5,
    tie_window: float = 1e-3,
) -> str | None:
    """Reason why ``out`` is not an acceptable ``(codes, scale)`` for ``x``, else None.

    Scales must match to ``scale_rtol`` (a GPU's amax / 127 may differ in the last bits).
    Codes must match exactly, except by one step where ``x / scale`` sits within
    ``tie_window`` of a .5 boundary: there a kernel may round either way, and a last-bit
    difference in its scale may move the value across. Truncating or flooring kernels differ
    on about half of all elements and fail.
    """
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return f"expected a tuple (codes, scale), got {type(out).__name__}"
    for name, o, r in (("codes", out[0], ref[0]), ("scale", out[1], ref[1])):
        if type(o) is not torch.Tensor:
            return f"{name} is {type(o).__qualname__}, expected a plain torch.Tensor"
        if o.shape != r.shape or o.dtype != r.dtype or o.device.type != r.device.type:
            return (f"{name} is {tuple(o.shape)} {o.dtype} on {o.device.type}, expected "
                    f"{tuple(r.shape)} {r.dtype} on {r.device.type}")
    # On the tensors' own device, and the tie analysis only where the codes differ: a copy
    # to the host and a full-size float64 pass took 5 s per trial at 134M codes on an H100.
    codes, scale = out[0], out[1]
    ref_codes, ref_scale = ref[0].to(codes.device), ref[1].to(codes.device)
    if not bool(torch.isfinite(scale).all()):
        return "scale has NaN/Inf"
    rel = ((scale.double() - ref_scale.double()).abs() / ref_scale.double()).max().item()
    if rel > scale_rtol:
        return f"scale differs from the reference by {rel:.3g} relative (> {scale_rtol:g})"
    diff = (codes.to(torch.int16) - ref_codes.to(torch.int16)).abs()
    if int(diff.max()) == 0:
        return None
    where = diff != 0
    d = diff[where]
    xs = x.to(codes.device)[where].double()
    ss = ref_scale.expand_as(ref_codes)[where].double()
    v = (xs / ss).abs()  # exact |x / scale|, only where the codes differ
    at_tie = (v - v.floor() - 0.5).abs() <= tie_window
    bad = (d > 1) | ((d == 1) & ~at_tie)
    n = int(bad.sum())
    if n == 0:
        return None
    j = int(bad.nonzero()[0])  # the first bad element among those that differ
    i = int(where.flatten().nonzero()[j])  # its flat index
    return (f"{n} of {codes.numel()} codes differ from round(x / scale) off a rounding tie "
            f"(first at flat index {i}: got {int(codes.flatten()[i])}, expected "
            f"{int(ref_codes.flatten()[i])}, x / scale = {float(v[j]):.4f} in magnitude)")
