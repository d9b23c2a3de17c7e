"""Hyperbolic tangent, elementwise over fp32 [tokens, dim]. Near 0 tanh(x) ~ x: forms like
1 - 2/(exp(2x) + 1) lose relative precision there (atol covers their ~1e-7 absolute error).
Memory-bound: one read, one write per element. H100 estimate: 0.94 GB in + 0.94 GB out -> ~0.65 ms eager.
Measured: 0.63 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

tokens = 16384
dim = 14336  # Llama-3-8B MLP intermediate size

KBENCH = {
    "dtype": "float32",
    # fp32 transcendental (exp/erf/tanh/log1p) implementations differ by a few ulp (~1e-7
    # relative); 1e-5 also admits fast exp2-based forms. Zeros and the input itself fail.
    "atol": 1e-5,
    "rtol": 1e-5,
    "shapes": {"odd": {"tokens": 4093, "dim": 11007}, "wide": {"tokens": 1000, "dim": 128256}},
    "cpu_shapes": {"small": {"tokens": 16, "dim": 512}, "odd": {"tokens": 7, "dim": 1001}},
    "flops": lambda s: 4 * s["tokens"] * s["dim"],
    "bytes": lambda s: 2 * 4 * s["tokens"] * s["dim"],
    "tags": ["elementwise", "activation", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)


def get_inputs():
    # x: [tokens, dim] float32, std 2
    return [torch.randn(tokens, dim) * 2]


def get_init_inputs():
    return []
