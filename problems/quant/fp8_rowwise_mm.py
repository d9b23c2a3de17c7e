"""FP8 (e4m3) scaled GEMM with row-wise scales: y = (xq @ wq^T) * sx[:, None] * sw[None, :].

xq: [M, K] float8_e4m3fn activations with per-token scales sx [M] fp32 (inputs, already
quantized upstream); wq: [N, K] float8_e4m3fn weight (nn.Linear layout) with per-output-channel
scales sw [N] fp32, from absmax-scaled quantization of Gaussian weights. Output [M, N] bf16.
The reference upcasts the fp8 values to fp32 (exact), matmuls in fp32, applies both scales,
casts to bf16 (what `torch._scaled_mm` with row-wise scales computes). Main shape: prefill
(M = 2048 tokens, Llama-3-8B gate/up 4096 -> 14336), compute-bound on FP8 tensor cores;
`decode` is the memory-bound regime. Eager H100 measured: 5.2 ms (main, 240 GFLOP in fp32),
0.38 ms (decode).
"""

import math

import torch
import torch.nn as nn

from reference_ops.quant_float import fp8_quantize_rowwise, fp8_rowwise_mm

M = 2048
K = 4096
N = 14336

KBENCH = {
    "dtype": "float8_e4m3fn",
    # bf16 output (|y| ~ 1) of a K-term sum of exact fp8 products: fp32 (or Hopper's ~22-bit FP8
    # tensor-core) accumulation is far inside bf16's rounding (4e-3 relative); 2e-2 is bf16's
    # usual bound, and rel-L2 2e-2 rejects zeros/inputs/a missing scale.
    "atol": 2e-2,
    "rtol": 2e-2,
    "shapes": {
        "decode": {"M": 16},
        "prefill_odd_down": {"M": 1000, "K": 14336, "N": 4096},
    },
    "cpu_shapes": {
        "small": {"M": 8, "K": 256, "N": 64},
        "odd": {"M": 5, "K": 96, "N": 37},
    },
    "flops": lambda s: 2 * s["M"] * s["N"] * s["K"],
    "bytes": lambda s: s["M"] * s["K"] + 4 * s["M"] + s["N"] * s["K"] + 4 * s["N"] + 2 * s["M"] * s["N"],
    "tags": ["quant", "fp8", "e4m3", "scaled-mm", "gemm", "prefill"],
}


class Model(nn.Module):
    def __init__(self, K: int, N: int):
        super().__init__()
        w = torch.randn(N, K) / math.sqrt(K)  # [N, K]
        wq, w_scale = fp8_quantize_rowwise(w)
        self.register_buffer("wq", wq)  # [N, K] float8_e4m3fn
        self.register_buffer("w_scale", w_scale)  # [N] fp32

    def forward(self, xq: torch.Tensor, x_scale: torch.Tensor) -> torch.Tensor:
        return fp8_rowwise_mm(xq, x_scale, self.wq, self.w_scale, torch.bfloat16)


def get_inputs():
    # xq: [M, K] e4m3, x_scale: [M] fp32 (per-token absmax / 448 of a Gaussian activation)
    x = torch.randn(M, K) * (0.5 + torch.rand(M, 1))  # token norms vary, so do the scales
    xq, x_scale = fp8_quantize_rowwise(x)
    return [xq, x_scale]


def get_init_inputs():
    return [K, N]
