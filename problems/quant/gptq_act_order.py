"""GPTQ W4A16 GEMM with act-order (desc_act): y = x @ W, W from GPTQ's v1 storage format.

x: [M, K] fp16. W: [K, N] logical (in_features x out_features), stored as qweight [K/8, N]
int32 (8 consecutive input channels per word, channel 8r + j in nibble j = bits 4j..4j+3),
qzeros [K/128, N/8] int32 (8 consecutive output columns per word, same nibble order) holding
z - 1 (the classic GPTQ quirk: add 1 back when dequantizing), scales [K/128, N] fp16 and
g_idx [K] int32. With act-order, input channel k belongs to group g_idx[k], which is NOT k // 128:
channels were quantized in descending order of a (random) Hessian diagonal, so each group is a
scattered set of 128 channels. W[k, n] = (q[k, n] - (zs[g, n] + 1)) * s[g, n], g = g_idx[k].
Codes come from min-max RTN of Gaussian weights per act-order group. The reference dequantizes
exactly in fp32, matmuls in fp32, casts to fp16. Main shape: prefill (M = 2048 tokens, Llama-3-8B
down projection 14336 -> 4096, the layer where act-order is usually enabled); `decode` is the
memory-bound regime. Eager H100 measured: 6.4 ms (main, 240 GFLOP in fp32 plus the gathers of
scales/zeros by g_idx), 1.9 ms (decode); 1.2 GB peak.
"""

import math

import torch
import torch.nn as nn

from reference_ops.quant_int4 import gptq_gemm, gptq_quantize

M = 2048
K = 14336
N = 4096
group_size = 128

KBENCH = {
    "dtype": "float16",
    # fp16 output of a 14336-term dot (|y| ~ 1): fp16-dequantized weights with fp32 accumulation
    # land within ~1e-3; fp16's usual 1e-2 bound, and rel-L2 1e-2 rejects zeros/inputs.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {
        "decode": {"M": 16},
        "prefill_odd_up": {"M": 1000, "K": 4096, "N": 14336},
        "decode_odd_qkv": {"M": 5, "K": 4096, "N": 6144},
    },
    "cpu_shapes": {
        "small": {"M": 4, "K": 256, "N": 64},
        "odd": {"M": 5, "K": 384, "N": 40},
    },
    "flops": lambda s: 2 * s["M"] * s["N"] * s["K"],
    "bytes": lambda s: (2 * s["M"] * s["K"] + s["K"] * s["N"] // 2 + 4 * s["K"]
                        + (s["K"] // s["group_size"]) * s["N"] * (2 + 0.5) + 2 * s["M"] * s["N"]),
    "fixed": ["K", "N", "group_size"],  # K: whole groups of 128; N: whole int32 words of 8
    "tags": ["quant", "int4", "gptq", "act-order", "w4a16", "gemm", "prefill"],
}


class Model(nn.Module):
    def __init__(self, K: int, N: int, group_size: int):
        super().__init__()
        w = torch.randn(K, N) / math.sqrt(K)  # [K, N]
        hessian_diag = torch.rand(K)  # act-order visits channels by descending H_kk
        qweight, qzeros, scales, g_idx = gptq_quantize(w, group_size, hessian_diag)
        self.register_buffer("qweight", qweight)  # [K/8, N] int32
        self.register_buffer("qzeros", qzeros)  # [K/G, N/8] int32, z - 1
        self.register_buffer("scales", scales)  # [K/G, N] fp16
        self.register_buffer("g_idx", g_idx)  # [K] int32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gptq_gemm(x, self.qweight, self.qzeros, self.scales, self.g_idx)


def get_inputs():
    # x: [M, K]
    return [torch.randn(M, K, dtype=torch.float16)]


def get_init_inputs():
    return [K, N, group_size]
