"""Symmetric int4 W4A16 GEMM (Marlin's input format, in the LOGICAL layout): y = x @ W.

x: [M, K] fp16. W: [K, N] logical (in_features x out_features), stored as qweight [K/8, N]
int32 (8 consecutive input channels per word, channel 8r + j in nibble j = bits 4j..4j+3) of
unsigned codes u in [0, 15] with an implicit zero point of 8 ("uint4b8"), and scales [K/128, N]
fp16: W[k, n] = (u[k, n] - 8) * s[k // 128, n]. This is the GPTQ-symmetric layout that Marlin
takes BEFORE its offline tile shuffle (`marlin_repack`); no shuffle is applied here, so a kernel
reads the logical layout as stored (it may not pre-permute the weights outside the timed call).
Codes come from symmetric RTN of Gaussian weights (s = 2 * absmax / 15 per group of 128).
The reference dequantizes exactly in fp32, matmuls in fp32, casts to fp16. Main shape: decode
with M = 16 tokens on Llama-3-8B's down projection (14336 -> 4096), the regime Marlin targets
(memory-bound on 29 MB of packed weights); `prefill_qkv` is the compute-bound regime.
Eager H100 measured: 1.1 ms (main, fp32 dequant of 59M weights), 2.5 ms (prefill_qkv).
"""

import math

import torch
import torch.nn as nn

from reference_ops.quant_int4 import int4_sym_gemm, int4_sym_quantize

M = 16
K = 14336
N = 4096
group_size = 128

KBENCH = {
    "dtype": "float16",
    # fp16 output of a K-term dot (|y| ~ 1): fp16-dequantized weights with fp32 accumulation
    # land within ~1e-3; fp16's usual 1e-2 bound, and rel-L2 1e-2 rejects zeros/inputs.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {
        "prefill_qkv": {"M": 2048, "K": 4096, "N": 6144},
        "decode_odd_up": {"M": 7, "K": 4096, "N": 14336},
        "prefill_odd": {"M": 1000},
    },
    "cpu_shapes": {
        "small": {"M": 4, "K": 256, "N": 64},
        "odd": {"M": 3, "K": 384, "N": 24},
    },
    "flops": lambda s: 2 * s["M"] * s["N"] * s["K"],
    "bytes": lambda s: (2 * s["M"] * s["K"] + s["K"] * s["N"] // 2
                        + (s["K"] // s["group_size"]) * s["N"] * 2 + 2 * s["M"] * s["N"]),
    "fixed": ["K", "group_size"],  # K: whole groups of 128 (and whole int32 words)
    "tags": ["quant", "int4", "marlin", "symmetric", "w4a16", "gemm", "decode"],
}


class Model(nn.Module):
    def __init__(self, K: int, N: int, group_size: int):
        super().__init__()
        self.group_size = group_size
        w = torch.randn(K, N) / math.sqrt(K)  # [K, N]
        qweight, scales = int4_sym_quantize(w, group_size)
        self.register_buffer("qweight", qweight)  # [K/8, N] int32, uint4b8 codes
        self.register_buffer("scales", scales)  # [K/G, N] fp16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int4_sym_gemm(x, self.qweight, self.scales, self.group_size)


def get_inputs():
    # x: [M, K]
    return [torch.randn(M, K, dtype=torch.float16)]


def get_init_inputs():
    return [K, N, group_size]
