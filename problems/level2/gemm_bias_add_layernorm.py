"""GEMM + bias + residual + LayerNorm (BERT's post-LN output): ``y = layer_norm(x @ W^T + b + residual)``.

x: [M, K] bf16 (the FFN activation, K = 4096); W: [N, K] (Gaussian, std K^-0.5), b: [N] (std
0.5); residual: [M, N] bf16; LayerNorm over N = 1024 with gamma in [0.5, 1.5], beta std 0.5, eps
1e-5, statistics in fp32; y: [M, N] bf16. The LayerNorm needs whole output rows, so a fused
kernel gives each CTA full rows of N (1024 fits one tile row) or reduces across CTAs.
Eager H100 estimate: 275 GFLOP bf16 addmm ~0.5 ms + add and LayerNorm over 67 MB ~0.1 ms = ~0.6 ms
(BERT-large, 64 x 512 tokens; measured 0.58 ms).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

M = 32768  # tokens
K = 4096  # FFN width
N = 1024  # model dim

KBENCH = {
    "dtype": "bfloat16",
    # eager rounds the GEMM output and the sum to bf16 before normalizing: ~1-2 bf16 ulps of
    # |y| ~ 1-3 from a single-rounding kernel; 2e-2, zeros or the residual fail.
    "atol": 2e-2,
    "rtol": 2e-2,
    "shapes": {"odd": {"M": 4093, "K": 3072, "N": 768}, "wide": {"M": 16384, "N": 2048}},
    "cpu_shapes": {"small": {"M": 64, "K": 128, "N": 64}, "odd": {"M": 37, "K": 96, "N": 53}},
    "flops": lambda s: 2 * s["M"] * s["N"] * s["K"] + 10 * s["M"] * s["N"],
    "bytes": lambda s: 2 * (s["M"] * s["K"] + s["N"] * s["K"] + 2 * s["M"] * s["N"] + 3 * s["N"]),
    "tags": ["gemm", "epilogue", "layernorm", "residual", "compute-bound"],
}


class Model(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, out_features, dtype=torch.bfloat16)
        self.norm = nn.LayerNorm(out_features, eps=1e-5, dtype=torch.bfloat16)
        with torch.no_grad():
            self.dense.weight.normal_(0.0, in_features**-0.5)
            self.dense.bias.normal_(0.0, 0.5)
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.normal_(0.0, 0.5)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(self.dense(x) + residual, self.norm.normalized_shape,
                            self.norm.weight, self.norm.bias, self.norm.eps)


def get_inputs():
    # x: [M, K]; residual: [M, N]
    return [torch.randn(M, K, dtype=torch.bfloat16), torch.randn(M, N, dtype=torch.bfloat16)]


def get_init_inputs():
    return [K, N]
