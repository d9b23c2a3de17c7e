"""LLM.int8() matmul with fp16 outlier columns (bitsandbytes' mixed-precision decomposition).

x: [M, K] fp16 activations with a few large-magnitude feature columns (as in real LLM
activations). Weight: cb [N, K] int8 (nn.Linear layout) with per-row absmax scb [N] fp32, so
W = cb * scb[:, None] / 127. Columns k where ANY |x[m, k]| > threshold (6.0) are outliers: that
part is x[:, out] (fp16 values) @ W[:, out]^T. The rest of x (outlier columns zeroed) is
quantized vector-wise: per row, sx = absmax / 127, xq = round(x / sx) (round half to even,
clamp to [-127, 127]); that part is (xq @ cb^T) * sx[m] * scb[n] / 127 with exact integer sums.
y = int8 part + outlier part, returned in fp16. Outlier columns differ per input (drawn from the
input seed). Main shape: prefill (M = 2048 tokens, Llama-3-8B fused QKV 4096 -> 6144); `decode`
is the memory-bound regime. Eager H100 measured: 2.8 ms (main: 103 GFLOP in
fp32 plus ~10 elementwise passes), 0.95 ms (decode).
"""

import math

import torch
import torch.nn as nn

from reference_ops.quant_int8 import int8_quantize_rowwise, llm_int8_matmul

M = 2048
K = 4096
N = 6144
threshold = 6.0

KBENCH = {
    "dtype": "float16",
    # fp16 output (mean |y| ~ 1.1) of exact integer sums + a short fp16 outlier product. fp16 x
    # values often land exactly on .5 after x / (absmax / 127); a kernel multiplying by 127 / absmax
    # (as bitsandbytes does) rounds some of those the other way (up to ~30 per row), which moves y
    # by up to ~1.5e-2 (measured on H100: max err 0.0149, rel-L2 4e-4). Hence atol 3e-2; rel-L2
    # 1e-2 still rejects zeros, a dropped outlier part, or skipping the int8 quantization of x.
    "atol": 3e-2,
    "rtol": 1e-2,
    "shapes": {
        "decode": {"M": 16, "N": 14336},
        "prefill_odd_down": {"M": 1000, "K": 14336, "N": 4096},
    },
    "cpu_shapes": {
        "small": {"M": 8, "K": 512, "N": 64},
        "odd": {"M": 5, "K": 300, "N": 37},
    },
    "flops": lambda s: 2 * s["M"] * s["N"] * s["K"],
    "bytes": lambda s: 2 * s["M"] * s["K"] + s["N"] * s["K"] + 4 * s["N"] + 2 * s["M"] * s["N"],
    "tags": ["quant", "int8", "llm.int8", "outliers", "gemm", "prefill"],
}


class Model(nn.Module):
    def __init__(self, K: int, N: int, threshold: float):
        super().__init__()
        self.threshold = threshold
        w = torch.randn(N, K) / math.sqrt(K)  # [N, K]
        cb, w_scale = int8_quantize_rowwise(w)
        self.register_buffer("cb", cb)  # [N, K] int8
        self.register_buffer("scb", w_scale * 127)  # [N] fp32 row absmax (bitsandbytes' SCB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return llm_int8_matmul(x, self.cb, self.scb, self.threshold)


def get_inputs():
    # x: [M, K]; K // 256 outlier feature columns with magnitudes 8..24x the rest
    x = torch.randn(M, K)
    n_out = max(1, K // 256)
    cols = torch.randperm(K)[:n_out]
    x[:, cols] *= 8 + 16 * torch.rand(n_out)
    return [x.to(torch.float16)]


def get_init_inputs():
    return [K, N, threshold]
