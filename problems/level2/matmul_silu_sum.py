"""GEMM + bias + SiLU + weighted sum reduction: a scalar score head ``s = silu(x @ W^T + b) @ v``.

x: [M, K] bf16; W: [N, K] (Gaussian, std K^-0.5), b: [N] (std 0.5); v: [N] (std N^-0.5);
s: [M] bf16, one score per token (a reward / value head). Eager materializes the [M, N] bf16
activation (235 MB), then reduces it with a GEMV; a fused kernel reduces each tile's SiLU
output against v in the epilogue and never writes it (partial sums across N tiles need a
second pass or atomics). The SiLU between the GEMM and the reduction rules out folding v into W.
Eager H100 estimate: 963 GFLOP bf16 GEMM ~1.6 ms + SiLU pass and GEMV over 235 MB ~0.3 ms = ~1.9 ms (measured 1.5 ms).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

M = 8192  # tokens
K = 4096
N = 14336

KBENCH = {
    "dtype": "bfloat16",
    # s ~ N(0, ~0.5^2), a sum of N terms each rounded to bf16 in eager (random, ~2^-9 relative,
    # averaging out) then rounded once to bf16: ~1 ulp; 2e-2, zeros or a constant fail.
    "atol": 2e-2,
    "rtol": 2e-2,
    "shapes": {"odd": {"M": 1000, "K": 4000, "N": 11003}},
    "cpu_shapes": {"small": {"M": 64, "K": 128, "N": 192}, "odd": {"M": 37, "K": 80, "N": 101}},
    "flops": lambda s: 2 * s["M"] * s["N"] * s["K"] + 6 * s["M"] * s["N"],
    "bytes": lambda s: 2 * (s["M"] * s["K"] + s["N"] * s["K"] + 2 * s["N"] + s["M"]),
    "tags": ["gemm", "epilogue", "silu", "reduction", "compute-bound"],
}


class Model(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, dtype=torch.bfloat16)
        self.v = nn.Parameter((torch.randn(out_features) * out_features**-0.5).to(torch.bfloat16))
        with torch.no_grad():
            self.linear.weight.normal_(0.0, in_features**-0.5)
            self.linear.bias.normal_(0.0, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mv(F.silu(self.linear(x)), self.v)


def get_inputs():
    # x: [M, K]
    return [torch.randn(M, K, dtype=torch.bfloat16)]


def get_init_inputs():
    return [K, N]
