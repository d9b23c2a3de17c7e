"""Llama RMSNorm, y = x / sqrt(mean(x^2) + eps) * weight over the last dim (eps 1e-5), x and
y [tokens, hidden] bf16 row-major, weight a bf16 parameter [hidden] ~ 1 + 0.1 N(0, 1). The
reference (reference_ops.norms.rms_norm) computes in fp32 and rounds once to bf16; kernels
that round the normalized value to bf16 before the weight multiply (HF, gpt-fast) also pass.
H100 estimate: 0.27 GB read + 0.27 GB written; the eager reference is ~7 fp32 kernels
(~5 GB moved) -> ~1.8 ms.
Measured: 2.1 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

from reference_ops.norms import rms_norm

tokens = 32768
hidden = 4096  # Llama-3-8B hidden size
eps = 1e-5

KBENCH = {
    "dtype": "bfloat16",
    # fp32 statistics; one or two bf16 roundings (<= 2 ulp, 1.6% relative) -> bf16 default 2e-2.
    "atol": 2e-2,
    "rtol": 2e-2,
    "shapes": {"odd": {"tokens": 4093, "hidden": 5120 + 3}, "decode": {"tokens": 64}},
    "cpu_shapes": {"small": {"tokens": 16, "hidden": 512}, "odd": {"tokens": 7, "hidden": 1001}},
    "flops": lambda s: 4 * s["tokens"] * s["hidden"],
    "bytes": lambda s: 2 * (2 * s["tokens"] * s["hidden"] + s["hidden"]),
    "tags": ["norm", "reduction", "memory-bound", "bf16"],
}


class Model(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        # weight: [hidden] bf16
        self.weight = nn.Parameter((1 + 0.1 * torch.randn(hidden)).to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, eps)


def get_inputs():
    # x: [tokens, hidden] bf16, per-row scale in [0.5, 2.5]
    scale = torch.rand(tokens, 1) * 2 + 0.5
    return [torch.randn(tokens, hidden).mul_(scale).to(torch.bfloat16)]


def get_init_inputs():
    return [hidden]
