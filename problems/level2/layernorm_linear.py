"""LayerNorm + linear: ``y = layer_norm(x) @ W^T + b``, a pre-LN transformer's QKV projection.

x: [M, K] bf16; LayerNorm over K with gamma in [0.5, 1.5] and beta (std 0.5), eps 1e-5, stats in
fp32; W: [N, K] Gaussian std K^-0.5, b: [N] std 0.5; y: [M, N] bf16. Eager writes the normalized
x (bf16) and reads it back in the GEMM; a fused kernel normalizes the A tiles on load (the row
statistics need one extra pass over x, or come from a tiny pre-pass).
Eager H100 estimate: LayerNorm over 34 MB ~0.03 ms + 412 GFLOP bf16 GEMM ~0.7 ms = ~0.75 ms (measured 0.65 ms).
"""

import torch
import torch.nn as nn

M = 4096  # tokens
K = 4096  # model dim
N = 12288  # fused q, k, v

KBENCH = {
    "dtype": "bfloat16",
    # the normalized x is rounded to bf16 before a K-term GEMM in eager, then the output is
    # rounded: ~1-2 bf16 ulps (2^-8 relative) of |y| ~ 1; 2e-2, zeros fail.
    "atol": 2e-2,
    "rtol": 2e-2,
    "shapes": {"odd": {"M": 1000, "K": 4000, "N": 3001}, "wide": {"M": 8192, "K": 8192, "N": 10240}},
    "cpu_shapes": {"small": {"M": 64, "K": 128, "N": 96}, "odd": {"M": 37, "K": 80, "N": 53}},
    "flops": lambda s: 2 * s["M"] * s["N"] * s["K"] + 8 * s["M"] * s["K"],
    "bytes": lambda s: 2 * (s["M"] * s["K"] + s["N"] * s["K"] + s["N"] + 2 * s["K"] + s["M"] * s["N"]),
    "tags": ["gemm", "layernorm", "prologue", "compute-bound"],
}


class Model(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_features, eps=1e-5, dtype=torch.bfloat16)
        self.linear = nn.Linear(in_features, out_features, dtype=torch.bfloat16)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.normal_(0.0, 0.5)
            self.linear.weight.normal_(0.0, in_features**-0.5)
            self.linear.bias.normal_(0.0, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))


def get_inputs():
    # x: [M, K] with per-row offset and scale (what LayerNorm removes)
    x = torch.randn(M, K) * (0.5 + torch.rand(M, 1)) + torch.randn(M, 1)
    return [x.to(torch.bfloat16)]


def get_init_inputs():
    return [K, N]
