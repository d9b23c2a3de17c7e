"""AWQ W4A16 GEMM: y = x @ W, W dequantized from AutoAWQ's GEMM storage format.

x: [M, K] fp16 activations. W: [K, N] logical (in_features x out_features), stored as
qweight [K, N/8] int32, qzeros [K/128, N/8] int32, scales [K/128, N] fp16, with
W[k, n] = (q[k, n] - z[k // 128, n]) * s[k // 128, n]. Both qweight and qzeros pack 8 output
columns 8c..8c+7 into one int32 in AWQ's interleaved order: nibble i (bits 4i..4i+3) holds
column 8c + [0, 2, 4, 6, 1, 3, 5, 7][i]. Codes come from min-max RTN of Gaussian weights
(group 128 along K). The reference dequantizes exactly in fp32, matmuls in fp32 and casts to
fp16. Main shape: decode (M = 16 tokens, Llama-3-8B gate/up projection 4096 -> 14336), where a
W4A16 kernel is memory-bound on the 29 MB of packed weights; `prefill` is the compute-bound
regime. Eager H100 measured: 1.5 ms (main, fp32 unpack/dequant of 59M weights dominates),
6.1 ms (prefill, 240 GFLOP in fp32); < 1 GB peak.
"""

import math

import torch
import torch.nn as nn

from reference_ops.quant_int4 import awq_gemm, awq_quantize

M = 16
K = 4096
N = 14336
group_size = 128

KBENCH = {
    "dtype": "float16",
    # fp16 output of a K-term dot (|y| ~ 1): a kernel that dequantizes to fp16 and accumulates in
    # fp32 lands within ~1e-3; 1e-2 is fp16's usual bound and rel-L2 1e-2 rejects zeros/inputs.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {
        "prefill": {"M": 2048},
        "prefill_odd_down": {"M": 1000, "K": 14336, "N": 4096},
        "decode_odd_qkv": {"M": 13, "K": 4096, "N": 6144},
    },
    "cpu_shapes": {
        "small": {"M": 4, "K": 256, "N": 128},
        "odd": {"M": 3, "K": 384, "N": 72},
    },
    "flops": lambda s: 2 * s["M"] * s["N"] * s["K"],
    "bytes": lambda s: (2 * s["M"] * s["K"] + s["K"] * s["N"] // 2
                        + (s["K"] // s["group_size"]) * s["N"] * (2 + 0.5) + 2 * s["M"] * s["N"]),
    "fixed": ["K", "N", "group_size"],  # K: whole groups of 128; N: whole int32 words of 8
    "tags": ["quant", "int4", "awq", "w4a16", "gemm", "decode"],
}


class Model(nn.Module):
    def __init__(self, K: int, N: int, group_size: int):
        super().__init__()
        self.group_size = group_size
        w = torch.randn(K, N) / math.sqrt(K)  # [K, N], y ~ N(0, 1) for x ~ N(0, 1)
        qweight, qzeros, scales = awq_quantize(w, group_size)
        self.register_buffer("qweight", qweight)  # [K, N/8] int32
        self.register_buffer("qzeros", qzeros)  # [K/G, N/8] int32
        self.register_buffer("scales", scales)  # [K/G, N] fp16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return awq_gemm(x, self.qweight, self.qzeros, self.scales, self.group_size)


def get_inputs():
    # x: [M, K]
    return [torch.randn(M, K, dtype=torch.float16)]


def get_init_inputs():
    return [K, N, group_size]
