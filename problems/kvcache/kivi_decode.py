"""KIVI decode attention over a 2-bit packed KV cache plus a bf16 residual of recent tokens.

q: [B, Hq, D] bf16, one new token per sequence (GQA: query head h reads KV head h // (Hq / Hkv)).
Quantized part (Sq = n_quant_groups * 32 oldest tokens, KIVI format as produced by kvcache/kivi_quant_pack):
  k_codes [B, Hkv, Sq/4, D] uint8 (2-bit codes packed along tokens), k_scale, k_min [B, Hkv, Sq/32, D]
  fp32 (per-channel, groups of 32 tokens); v_codes [B, Hkv, Sq, D/4] uint8 (packed along channels),
  v_scale, v_min [B, Hkv, Sq, D/32] fp32 (per-token, groups of 32 channels). Element 4i + j of the
  packed axis sits at bits [2j, 2j+2) of byte i; x = mn + code * scale.
Residual part: k_res, v_res [B, Hkv, R, D] bf16, the R most recent tokens, unquantized, AFTER the
quantized ones. out = softmax(q K^T / sqrt(D)) V over all Sq + R tokens, in fp32, cast to bf16:
[B, Hq, D]. Main shape: 32 sequences of 8k context (8192 quantized + 96 residual tokens), Llama-3-8B
heads; memory-bound on 2-bit codes (134 MB) + fp32 scales/mins (134 MB). Eager H100: 12.9 ms measured
(fp32 dequantization of 2 x 1.1 GB, then attention), 4.6 GB peak.
"""

import torch
import torch.nn as nn

from reference_ops.kvcache_attention import decode_attention
from reference_ops.kvcache_formats import kivi_dequant_keys, kivi_dequant_values, kivi_quant_pack

batch_size = 32
n_heads = 32
n_kv_heads = 8
head_dim = 128
group_size = 32
n_quant_groups = 256  # Sq = 8192 quantized tokens
n_residual = 96

KBENCH = {
    "dtype": "bfloat16",
    # bf16 output (mean |out| ~ 0.035, max ~ 0.3) of an fp32 softmax-weighted sum over ~8k tokens:
    # a kernel that dequantizes to bf16 (SDPA on H100) lands at rel-L2 3e-3, max err 2e-3 (one bf16
    # ulp at 0.3); bf16's 2e-2 relative with a 1e-3 floor; rel-L2 2e-2 rejects zeros/a dropped residual.
    "atol": 1e-3,
    "rtol": 2e-2,
    "shapes": {
        "odd": {"batch_size": 5, "n_quant_groups": 127, "n_residual": 31},
        "long": {"batch_size": 4, "n_quant_groups": 2048, "n_residual": 128},
    },
    "cpu_shapes": {
        "small": {"batch_size": 2, "n_heads": 4, "n_kv_heads": 2, "head_dim": 64, "n_quant_groups": 4,
                  "n_residual": 16},
        "odd": {"batch_size": 1, "n_heads": 6, "n_kv_heads": 3, "head_dim": 32, "n_quant_groups": 3,
                "n_residual": 7},
    },
    "flops": lambda s: 4 * s["batch_size"] * s["n_heads"] * s["head_dim"]
    * (s["n_quant_groups"] * s["group_size"] + s["n_residual"]),
    # q + out (bf16); per quantized element 2 bits + fp32 scale/min per 32 (K and V); bf16 residual
    "bytes": lambda s: 4 * s["batch_size"] * s["n_heads"] * s["head_dim"] + s["batch_size"] * s["n_kv_heads"]
    * s["head_dim"] * (2 * s["n_quant_groups"] * s["group_size"] * (0.25 + 0.25) + 4 * s["n_residual"]),
    "fixed": ["n_heads", "n_kv_heads", "head_dim", "group_size"],
    "tags": ["kvcache", "quant", "kivi", "int2", "decode", "attention", "gqa", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, q, k_codes, k_scale, k_min, v_codes, v_scale, v_min, k_res, v_res):
        k = torch.cat([kivi_dequant_keys(k_codes, k_scale, k_min), k_res.float()], dim=2)  # [B, Hkv, S, D]
        v = torch.cat([kivi_dequant_values(v_codes, v_scale, v_min), v_res.float()], dim=2)
        return decode_attention(q, k, v)[0].to(q.dtype)


def get_inputs():
    # q: [B, Hq, D] (logits then have std ~1.6); the cache: KIVI-compressed Gaussian K/V
    # (keys with per-channel offsets/scales) + a bf16 residual.
    S = n_quant_groups * group_size + n_residual
    chan = 1 + torch.rand(1, n_kv_heads, 1, head_dim)
    k = (torch.randn(batch_size, n_kv_heads, S, head_dim) * chan
         + 0.5 * torch.randn(1, n_kv_heads, 1, head_dim)).to(torch.bfloat16)
    v = torch.randn(batch_size, n_kv_heads, S, head_dim, dtype=torch.bfloat16)
    q = torch.randn(batch_size, n_heads, head_dim, dtype=torch.bfloat16)
    Sq = n_quant_groups * group_size
    packed = kivi_quant_pack(k[:, :, :Sq], v[:, :, :Sq], group_size)
    return [q, *packed, k[:, :, Sq:].contiguous(), v[:, :, Sq:].contiguous()]


def get_init_inputs():
    return []
