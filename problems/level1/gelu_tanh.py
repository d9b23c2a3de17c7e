"""GELU with the tanh approximation, 0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x^3))), as in
GPT-2/Gemma MLPs, on a bf16 activation [tokens, dim]. PyTorch computes it in fp32 and
rounds once to bf16; a kernel should do the same (a bf16-arithmetic tanh is a precision
downgrade).
Memory-bound: one read, one write per element. H100 estimate: 0.94 GB in + 0.94 GB out -> ~0.65 ms eager.
Measured: 0.63 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

tokens = 32768
dim = 14336  # Llama-3-8B MLP intermediate size

KBENCH = {
    "dtype": "bfloat16",
    # computed in fp32 and rounded once to bf16: at most one bf16 ulp (< 7.9e-3 relative)
    # apart; atol covers values near zero. Zeros and the input itself fail.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {"odd": {"tokens": 4093, "dim": 11007}, "wide": {"tokens": 1000, "dim": 128256}},
    "cpu_shapes": {"small": {"tokens": 16, "dim": 512}, "odd": {"tokens": 7, "dim": 1001}},
    "flops": lambda s: 8 * s["tokens"] * s["dim"],
    "bytes": lambda s: 2 * 2 * s["tokens"] * s["dim"],
    "tags": ["elementwise", "activation", "memory-bound", "bf16"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x, approximate="tanh")


def get_inputs():
    # x: [tokens, dim] bfloat16, std 2
    return [torch.randn(tokens, dim).mul_(2).to(torch.bfloat16)]


def get_init_inputs():
    return []
