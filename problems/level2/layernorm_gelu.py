"""LayerNorm + GELU: ``y = gelu(layer_norm(x) * gamma + beta)`` over the last dim (norm + activation).

x: [M, N] bf16 row-major, one row per token; gamma, beta: [N] bf16 (gamma in [0.5, 1.5], beta std
0.5, so both matter); eps 1e-5; y: [M, N] bf16. Mean and variance are taken in fp32 (biased
variance, as nn.LayerNorm); GELU is the exact erf form. Memory-bound: one read, one write is the
floor; eager makes two passes (LayerNorm, then GELU).
Eager H100 estimate: 2 kernels x (537 MB read + 537 MB write) at ~3 TB/s = ~0.75 ms (measured 0.90 ms).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

M = 65536  # tokens (e.g. 16 sequences x 4096)
N = 4096  # hidden size
eps = 1e-5

KBENCH = {
    "dtype": "bfloat16",
    # elementwise on a normalized row: the only error is bf16 rounding. Eager rounds twice
    # (the LayerNorm output, then the GELU output), so a kernel that keeps fp32 between them
    # differs by up to ~3 ulps (2^-7 relative each): one element in 268M failed 1e-2 on an
    # H200. 2e-2 allows that; zeros, x, or a skipped gamma/beta still fail.
    "atol": 2e-2,
    "rtol": 2e-2,
    "shapes": {"odd": {"M": 30011, "N": 5003}, "wide": {"M": 16384, "N": 8192}},
    "cpu_shapes": {"small": {"M": 64, "N": 256}, "odd": {"M": 37, "N": 211}},
    "flops": lambda s: 12 * s["M"] * s["N"],
    "bytes": lambda s: 2 * (2 * s["M"] * s["N"] + 2 * s["N"]),
    "tags": ["norm", "layernorm", "gelu", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, eps=eps, dtype=torch.bfloat16)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.normal_(0.0, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.norm(x))


def get_inputs():
    # x: [M, N]; an offset and scale per row, as real activations have
    x = torch.randn(M, N) * (0.5 + torch.rand(M, 1)) + torch.randn(M, 1)
    return [x.to(torch.bfloat16)]


def get_init_inputs():
    return [N]
