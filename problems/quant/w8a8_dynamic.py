"""W8A8 linear with dynamic activation quantization: each token of x is quantized to int8
with its own scale on the fly, multiplied by int8 weights quantized per output channel,
accumulated in int32, rescaled and returned in fp16."""

import torch
import torch.nn as nn

from reference_ops.w8a8_dynamic import check_w8a8_dynamic, quantize_weight_int8, w8a8_dynamic_linear

batch_size = 4096  # tokens
in_features = 4096  # Llama-3-8B hidden size
out_features = 14336  # Llama-3-8B FFN size

KBENCH = {
    "dtype": "float16",
    # The product of codes is exact; what remains is one fp16 rounding of y ~ N(0, 1)
    # (~5e-4) and activation codes a kernel may round the other way at .5 ties: each moves
    # y by ~1e-4 here, but by up to ~0.05 on inputs whose magnitudes spread over two orders
    # (a row's scale is 20x larger). The check allows atol/rtol 1e-2 plus exactly what the
    # codes at ties can move; zeros, unscaled sums and truncated codes fail.
    "atol": 1e-2,
    "rtol": 1e-2,
    "check": check_w8a8_dynamic,
    "shapes": {
        "odd": {"batch_size": 1000, "in_features": 4093, "out_features": 4099},
        "decode": {"batch_size": 16},
    },
    "cpu_shapes": {
        "small": {"batch_size": 16, "in_features": 128, "out_features": 64},
        "odd": {"batch_size": 5, "in_features": 67, "out_features": 37},
    },
    "flops": lambda s: 2 * s["batch_size"] * s["in_features"] * s["out_features"],
    # x (fp16) + w_q (int8) + w_scale (fp32) + y (fp16)
    "bytes": lambda s: (2 * s["batch_size"] * s["in_features"]
                        + s["out_features"] * (s["in_features"] + 4)
                        + 2 * s["batch_size"] * s["out_features"]),
    "tags": ["quant", "int8", "gemm", "w8a8", "compute-bound"],
}


class Model(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        w = torch.randn(out_features, in_features) * in_features**-0.5  # [N, K] fp32
        w_q, w_scale = quantize_weight_int8(w)
        self.register_buffer("w_q", w_q)  # [N, K] int8
        self.register_buffer("w_scale", w_scale)  # [N, 1] fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return w8a8_dynamic_linear(x, self.w_q, self.w_scale)  # [M, N] fp16


def get_inputs():
    # x: [batch_size, in_features] fp16 activations
    return [torch.randn(batch_size, in_features, dtype=torch.float16)]


def get_init_inputs():
    return [in_features, out_features]
