"""W4A8 GEMM (QQQ / QServe per-channel style): int8 activations x signed int4 weights.

xq: [M, K] int8 activations with per-token scales sx [M] fp32 (inputs, already quantized
upstream: absmax / 127, round half to even). Weight: [N, K] (nn.Linear layout) signed int4 in
[-8, 7], packed two per byte into wq [N, K/2] uint8 (element 2j in the low nibble, 2j + 1 in
the high nibble, 4-bit two's complement), with per-output-channel scales sw [N] fp32 from
symmetric RTN of Gaussian weights (absmax / 7). y = (xq @ wq^T) * sx[:, None] * sw[None, :]
as fp16; the integer sums are exact (|sum| < 127 * 8 * K < 2^24, exact in fp32 and int32).
Main shape: prefill (M = 2048 tokens, Llama-3-8B gate/up 4096 -> 14336), compute-bound on
int8 tensor cores; `decode` is the memory-bound regime. Eager H100 measured: 6.0 ms (main, 240
GFLOP in fp32), 1.2 ms (decode).
"""

import math

import torch
import torch.nn as nn

from reference_ops.quant_int8 import (
    int4_quantize_per_channel,
    int8_quantize_rowwise,
    pack_int4_signed,
    w4a8_gemm,
)

M = 2048
K = 4096
N = 14336

KBENCH = {
    "dtype": "float16",
    # fp16 output (|y| ~ 1) of exact integer sums times two fp32 scales: only the final fp16
    # rounding (5e-4) differs; fp16's usual 1e-2, and rel-L2 1e-2 rejects zeros/inputs/a missing scale.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {
        "decode": {"M": 16},
        "prefill_odd_down": {"M": 1000, "K": 14336, "N": 4096},
    },
    "cpu_shapes": {
        "small": {"M": 8, "K": 256, "N": 64},
        "odd": {"M": 5, "K": 98, "N": 37},
    },
    "flops": lambda s: 2 * s["M"] * s["N"] * s["K"],
    "bytes": lambda s: s["M"] * s["K"] + 4 * s["M"] + s["N"] * s["K"] // 2 + 4 * s["N"] + 2 * s["M"] * s["N"],
    "fixed": ["K"],  # whole bytes of 2 codes per row
    "tags": ["quant", "int4", "int8", "w4a8", "gemm", "prefill"],
}


class Model(nn.Module):
    def __init__(self, K: int, N: int):
        super().__init__()
        w = torch.randn(N, K) / math.sqrt(K)  # [N, K]
        q, w_scale = int4_quantize_per_channel(w)
        self.register_buffer("wq", pack_int4_signed(q))  # [N, K/2] uint8
        self.register_buffer("w_scale", w_scale)  # [N] fp32

    def forward(self, xq: torch.Tensor, x_scale: torch.Tensor) -> torch.Tensor:
        return w4a8_gemm(xq, x_scale, self.wq, self.w_scale, torch.float16)


def get_inputs():
    # xq: [M, K] int8, x_scale: [M] fp32 (per-token absmax / 127 of a Gaussian activation)
    x = torch.randn(M, K) * (0.5 + torch.rand(M, 1))
    xq, x_scale = int8_quantize_rowwise(x)
    return [xq, x_scale]


def get_init_inputs():
    return [K, N]
