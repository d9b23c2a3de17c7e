"""W8A8 linear: int8 weights (one scale per output channel) times int8 activations quantized
on the fly (one scale per token), int32 accumulation, scales applied, 16-bit output."""

from __future__ import annotations

import torch

from reference_ops.kv_int8_quant import quantize_int8_rowwise

__all__ = ["quantize_weight_int8", "w8a8_dynamic_linear"]


def quantize_weight_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w: [N, K] float -> (w_q: [N, K] int8, w_scale: [N, 1] fp32), per output channel."""
    return quantize_int8_rowwise(w)


def w8a8_dynamic_linear(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """x: [M, K] fp16/bf16, w_q: [N, K] int8, w_scale: [N, 1] fp32 -> y: [M, N] in x's dtype.

    y = (x_q @ w_q^T) * x_scale * w_scale^T, which is dequantize-then-matmul with the scales
    factored out. The product of codes runs as an fp32 matmul of integer values: each code is
    exact in fp32 (and in TF32), and partial sums stay integers far below 2**24 here, so it
    equals the int32 accumulation bit for bit, on CPU and GPU alike.
    """
    x_q, x_scale = quantize_int8_rowwise(x)  # [M, K] int8, [M, 1] fp32
    acc = x_q.float() @ w_q.float().T  # [M, N], integer-valued
    return (acc * x_scale * w_scale.T).to(x.dtype)
