"""KIVI 2-bit KV-cache compression at prefill: quantize K per-channel and V per-token, pack 4 codes/byte.

Inputs: k, v [B, Hkv, S, D] bf16 (HF layout). Only whole groups are compressed: Sq = (S // 32) * 32
tokens (the rest stay in KIVI's full-precision residual and are not part of this op). Codes are
asymmetric 2-bit: code = round_half_even((x - mn) / scale) clamped to [0, 3], scale = (max - min) / 3,
all in fp32 from the bf16 values (a group with max == min gets scale 0 and codes 0); x ~= mn + code * scale.
  * K, per-channel: groups of 32 consecutive tokens per channel -> k_scale, k_min [B, Hkv, Sq/32, D] fp32;
    codes packed along TOKENS: k_codes [B, Hkv, Sq/4, D] uint8.
  * V, per-token: groups of 32 consecutive channels per token -> v_scale, v_min [B, Hkv, Sq, D/32] fp32;
    codes packed along CHANNELS: v_codes [B, Hkv, Sq, D/4] uint8.
Bit order: element 4i + j of the packed axis sits at bits [2j, 2j+2) of byte i (first element in the
low bits). Outputs: (k_codes, k_scale, k_min, v_codes, v_scale, v_min). Check: min exact, scale to
1e-6 relative, codes exact except by one step where (x - min) / scale lies within 1e-4 of a rounding
boundary (bf16 inputs often hit exact .5 ties; a last-bit difference in the division may tip them).
Main shape: a 32k-token prompt batch (8 x 4096) of one layer, Llama-3-8B KV heads; memory-bound
(134 MB in, 34 MB out). Eager H100: 2.2 ms measured (about a dozen fp32 passes over K and V).
"""

import torch
import torch.nn as nn

from reference_ops.kvcache_formats import (
    codes_reason,
    kivi_key_t,
    kivi_quant_pack,
    kivi_value_t,
    unpack_2bit,
)

batch_size = 8
n_kv_heads = 8
seq_len = 4096
head_dim = 128
group_size = 32

_SCALE_RTOL = 1e-6  # scale = (max - min) / 3 in fp32: a reciprocal multiply is off by ~1 ulp


def _check(out, ref, inputs):
    """mins exact, scales to _SCALE_RTOL, codes exact but for rounding-boundary ties."""
    k, v = inputs
    if not isinstance(out, (tuple, list)) or len(out) != len(ref):
        return f"expected a tuple of {len(ref)} tensors, got {type(out).__name__}"
    names = ("k_codes", "k_scale", "k_min", "v_codes", "v_scale", "v_min")
    for name, o, r in zip(names, out, ref, strict=True):
        if type(o) is not torch.Tensor or o.shape != r.shape or o.dtype != r.dtype or o.device.type != r.device.type:
            got = f"{tuple(o.shape)} {o.dtype}" if isinstance(o, torch.Tensor) else type(o).__name__
            return f"{name}: got {got}, expected {tuple(r.shape)} {r.dtype} on {r.device.type}"
    for name, o, r in zip(names, out, ref, strict=True):
        if name.endswith("_min") and not torch.equal(o, r):
            return f"{name}: {int((o != r).sum())} of {r.numel()} group minima differ (they are exact)"
        if name.endswith("_scale"):
            err = ((o.double() - r.double()).abs() - _SCALE_RTOL * r.double().abs())
            if bool((err > 0).any()) or not bool(torch.isfinite(o).all()):
                return f"{name}: {int((err > 0).sum())} of {r.numel()} scales off by more than {_SCALE_RTOL:g} relative"
    k_t = kivi_key_t(k, ref[1], ref[2], group_size)
    v_t = kivi_value_t(v, ref[4], ref[5])
    return (codes_reason(unpack_2bit(out[0], 2), unpack_2bit(ref[0], 2), k_t, "k_codes")
            or codes_reason(unpack_2bit(out[3], 3), unpack_2bit(ref[3], 3), v_t, "v_codes"))


KBENCH = {
    "dtype": "bfloat16",
    # Judged by _check: integer codes exact (but for boundary ties), mins exact, scales 1e-6.
    "atol": 0.0,
    "rtol": _SCALE_RTOL,
    "check": _check,
    "shapes": {
        "odd": {"batch_size": 3, "seq_len": 4093},
        "long": {"batch_size": 1, "seq_len": 131072},
    },
    "cpu_shapes": {
        "small": {"batch_size": 2, "n_kv_heads": 2, "seq_len": 128, "head_dim": 64},
        "odd": {"batch_size": 1, "n_kv_heads": 3, "seq_len": 101, "head_dim": 32},
    },
    # min/max/subtract/divide/round/clamp/shift-or: ~8 ops per element of K and V
    "flops": lambda s: 16 * s["batch_size"] * s["n_kv_heads"] * s["seq_len"] * s["head_dim"],
    # K, V read (bf16); codes (2 bits) + fp32 scale and min per 32 elements written, for K and V
    "bytes": lambda s: s["batch_size"] * s["n_kv_heads"] * s["seq_len"] * s["head_dim"] * 2 * (2 + 0.25 + 8 / 32),
    "fixed": ["head_dim", "group_size"],
    "tags": ["kvcache", "quant", "kivi", "int2", "bit-packing", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self, group_size: int):
        super().__init__()
        self.group_size = group_size

    def forward(self, k: torch.Tensor, v: torch.Tensor):
        return kivi_quant_pack(k, v, self.group_size)


def get_inputs():
    # k, v: [B, Hkv, S, D]; keys get per-channel offsets/scales (the outlier channels KIVI targets)
    shape = (batch_size, n_kv_heads, seq_len, head_dim)
    chan = 1 + 3 * torch.rand(1, n_kv_heads, 1, head_dim)
    k = (torch.randn(shape) * chan + torch.randn(1, n_kv_heads, 1, head_dim)).to(torch.bfloat16)
    v = torch.randn(shape, dtype=torch.bfloat16)
    return [k, v]


def get_init_inputs():
    return [group_size]
