"""LUT-quantized 4-bit GEMM (FLUTE-style NF4): y = x @ W^T with W[n, k] = T[code[n, k]] * s[n, k // 64].

x: [M, K] fp16. W: [N, K] (nn.Linear layout), stored as codes [N, K/2] uint8 (element 2j of a
row in the low nibble, 2j + 1 in the high nibble), a global lookup table T [16] fp16 (the
NormalFloat-4 code book, sorted, in [-1, 1]; a kernel must read it from the buffer, not
hard-code it) and per-group scales s [N, K/64] fp16 (absmax of each group of 64 input
channels). Codes come from nearest-table-entry quantization of Gaussian weights. The reference
dequantizes exactly in fp32 (table lookup times scale), matmuls in fp32, casts to fp16.
Main shape: decode with M = 16 tokens on Llama-3-8B's gate/up projection (4096 -> 14336),
FLUTE's target regime (memory-bound on 29 MB of codes + 1.8 MB of scales); `prefill` is the
compute-bound regime. Eager H100 measured: 2.1 ms (main, fp32 gather-dequant of 59M weights),
4.8 ms (prefill); 1.5 GB peak.
"""

import math

import torch
import torch.nn as nn

from reference_ops.quant_int4 import NF4_TABLE, lut4_gemm, lut4_quantize

M = 16
K = 4096
N = 14336
group_size = 64

KBENCH = {
    "dtype": "float16",
    # fp16 output of a K-term dot (|y| ~ 1): table values and scales are fp16, so an fp16
    # dequant with fp32 accumulation lands within ~1e-3; fp16's usual 1e-2 bound, and rel-L2
    # 1e-2 rejects zeros/inputs.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {
        "prefill": {"M": 1024},
        "decode_odd_down": {"M": 9, "K": 14336, "N": 4096},
        "prefill_odd_qkv": {"M": 1000, "K": 4096, "N": 6144},
    },
    "cpu_shapes": {
        "small": {"M": 4, "K": 256, "N": 64},
        "odd": {"M": 3, "K": 192, "N": 37},
    },
    "flops": lambda s: 2 * s["M"] * s["N"] * s["K"],
    "bytes": lambda s: (2 * s["M"] * s["K"] + s["K"] * s["N"] // 2 + 2 * 16
                        + (s["K"] // s["group_size"]) * s["N"] * 2 + 2 * s["M"] * s["N"]),
    "fixed": ["K", "group_size"],  # K: whole groups of 64
    "tags": ["quant", "int4", "lut", "nf4", "flute", "w4a16", "gemm", "decode"],
}


class Model(nn.Module):
    def __init__(self, K: int, N: int, group_size: int):
        super().__init__()
        self.group_size = group_size
        table = torch.tensor(NF4_TABLE, dtype=torch.float16)
        w = torch.randn(N, K) / math.sqrt(K)  # [N, K]
        codes, scales = lut4_quantize(w, table, group_size)
        self.register_buffer("codes", codes)  # [N, K/2] uint8
        self.register_buffer("table", table)  # [16] fp16
        self.register_buffer("scales", scales)  # [N, K/G] fp16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lut4_gemm(x, self.codes, self.table, self.scales, self.group_size)


def get_inputs():
    # x: [M, K]
    return [torch.randn(M, K, dtype=torch.float16)]


def get_init_inputs():
    return [K, N, group_size]
