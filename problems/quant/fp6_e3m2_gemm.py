"""FP6 (e3m2) weight-only GEMM, FP6-LLM / quant-llm style, in a LOGICAL bit-packed layout.

x: [M, K] fp16. W: [N, K] (nn.Linear layout) of 6-bit e3m2 codes with a per-output-channel
scale s [N] fp16: W[n, k] = e3m2(code[n, k]) * s[n]. e3m2: bit 5 sign, bits 4..2 exponent
(bias 3), bits 1..0 mantissa, no Inf/NaN; exponent 0 is subnormal (m/4 * 2^-2), else
(1 + m/4) * 2^(e-3); max 28. Packing: along each row, 4 consecutive codes c0..c3 form the 24-bit
word c0 | c1 << 6 | c2 << 12 | c3 << 18, stored little-endian as 3 bytes, so packed is
[N, 3K/4] uint8 (NOT FP6-LLM's pre-shuffled 2+4-bit split; no repacking outside the timed call).
Codes come from round-to-nearest of Gaussian weights scaled by absmax / 28. The reference
dequantizes exactly in fp32, matmuls in fp32, casts to fp16. Main shape: decode with M = 16
tokens on Llama-3-8B's gate/up projection (4096 -> 14336), FP6-LLM's target regime (memory-bound
on 44 MB of codes); `prefill` is the compute-bound regime. Eager H100 measured: 4.2 ms (main,
byte unpack + table lookup of 59M weights in fp32), 6.9 ms (prefill); 1.5 GB peak.
"""

import math

import torch
import torch.nn as nn

from reference_ops.quant_float import fp6_gemm, fp6_quantize, pack_fp6

M = 16
K = 4096
N = 14336

KBENCH = {
    "dtype": "float16",
    # fp16 output of a K-term dot (|y| ~ 1): e3m2 values times an fp16 scale round to fp16 at
    # ~5e-4 relative, fp32 accumulation lands within ~1e-3; fp16's usual 1e-2, and rel-L2 1e-2
    # rejects zeros/inputs.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {
        "prefill": {"M": 1024},
        "decode_odd_down": {"M": 11, "K": 14336, "N": 4096},
        "prefill_odd_qkv": {"M": 1000, "K": 4096, "N": 6144},
    },
    "cpu_shapes": {
        "small": {"M": 4, "K": 256, "N": 64},
        "odd": {"M": 3, "K": 100, "N": 37},
    },
    "flops": lambda s: 2 * s["M"] * s["N"] * s["K"],
    "bytes": lambda s: 2 * s["M"] * s["K"] + 3 * s["N"] * s["K"] // 4 + 2 * s["N"] + 2 * s["M"] * s["N"],
    "fixed": ["K"],  # whole groups of 4 codes (3 bytes) per row
    "tags": ["quant", "fp6", "e3m2", "w6a16", "gemm", "decode"],
}


class Model(nn.Module):
    def __init__(self, K: int, N: int):
        super().__init__()
        w = torch.randn(N, K) / math.sqrt(K)  # [N, K]
        codes, scale = fp6_quantize(w)
        self.register_buffer("packed", pack_fp6(codes))  # [N, 3K/4] uint8
        self.register_buffer("scale", scale)  # [N] fp16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp6_gemm(x, self.packed, self.scale)


def get_inputs():
    # x: [M, K]
    return [torch.randn(M, K, dtype=torch.float16)]


def get_init_inputs():
    return [K, N]
