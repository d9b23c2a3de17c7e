"""GEMM + bias + GELU: ``y = gelu(x @ W^T + b)``, the up-projection of a GPT/BERT-style MLP.

x: [M, K] bf16 row-major; W: [N, K] (nn.Linear layout), b: [N]; y: [M, N] bf16. GELU is the exact
erf form (``approximate="none"``), not the tanh approximation. The bias is large on purpose
(std 0.5), so a kernel that drops it fails. A fused kernel applies bias + GELU to the fp32
accumulator in the GEMM epilogue and rounds once; eager rounds the GEMM output to bf16 first.
Eager H100 estimate: 550 GFLOP bf16 GEMM ~0.9 ms + bias-GELU pass over 2 x 134 MB ~0.1 ms = ~1 ms (measured 0.83 ms).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

M = 4096  # tokens
K = 4096  # in features (model dim)
N = 16384  # out features (4 x model dim)

KBENCH = {
    "dtype": "bfloat16",
    # bf16 output (8-bit mantissa, 2^-8 relative step) after a K-term fp32-accumulated GEMM:
    # eager and fused differ by ~1 bf16 ulp of the pre-activation; 2e-2 leaves room, zeros fail.
    "atol": 2e-2,
    "rtol": 2e-2,
    "shapes": {"odd": {"M": 1000, "K": 4000, "N": 11003}, "short": {"M": 512}},
    "cpu_shapes": {"small": {"M": 64, "K": 128, "N": 96}, "odd": {"M": 37, "K": 80, "N": 53}},
    "flops": lambda s: 2 * s["M"] * s["N"] * s["K"],
    "bytes": lambda s: 2 * (s["M"] * s["K"] + s["N"] * s["K"] + s["N"] + s["M"] * s["N"]),
    "tags": ["gemm", "epilogue", "gelu", "compute-bound"],
}


class Model(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, dtype=torch.bfloat16)
        with torch.no_grad():  # unit-variance outputs; a bias large enough that dropping it fails
            self.linear.weight.normal_(0.0, in_features**-0.5)
            self.linear.bias.normal_(0.0, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.linear(x))


def get_inputs():
    # x: [M, K]
    return [torch.randn(M, K, dtype=torch.bfloat16)]


def get_init_inputs():
    return [K, N]
