"""Per-token symmetric int8 quantization of a KV-cache block: one fp32 scale for each
(batch, head, position), codes = round(kv / scale). Memory-bound: bf16 in, int8 out."""

import torch
import torch.nn as nn

from reference_ops.kv_int8_quant import check_int8_quant, kv_int8_quant

batch_size = 16
n_kv_heads = 8  # Llama-3-8B
seq_len = 8192
head_dim = 128

_SCALE_RTOL = 1e-5

KBENCH = {
    "dtype": "bfloat16",
    # Codes are compared exactly except by one step at exact .5 ties (where rounding either
    # way is right, and a last-bit difference in a GPU's division can tip the value); scales
    # to 1e-5 relative. See reference_ops.kv_int8_quant.check_int8_quant.
    "atol": 0.0,
    "rtol": _SCALE_RTOL,
    "check": lambda out, ref, inputs: check_int8_quant(out, ref, inputs[0], scale_rtol=_SCALE_RTOL),
    "shapes": {
        "odd": {"batch_size": 3, "seq_len": 4093},
        "long": {"batch_size": 1, "seq_len": 131072},
    },
    "cpu_shapes": {
        "small": {"batch_size": 2, "n_kv_heads": 2, "seq_len": 16},
        "odd": {"batch_size": 1, "n_kv_heads": 3, "seq_len": 37},
    },
    "flops": lambda s: 4 * s["batch_size"] * s["n_kv_heads"] * s["seq_len"] * s["head_dim"],
    # kv in (bf16) + codes out (int8) + scales out (fp32)
    "bytes": lambda s: s["batch_size"] * s["n_kv_heads"] * s["seq_len"] * (3 * s["head_dim"] + 4),
    "tags": ["kvcache", "quant", "int8", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return kv_int8_quant(kv)  # codes [B, H, S, D] int8, scale [B, H, S, 1] fp32


def get_inputs():
    # kv: [B, H, S, D] bf16 (one of K or V for one layer)
    return [torch.randn(batch_size, n_kv_heads, seq_len, head_dim, dtype=torch.bfloat16)]


def get_init_inputs():
    return []
