"""Gated-MLP down projection: ``y = (silu(gate) * up) @ W_down^T`` from a fused gate_up activation.

gate_up: [M, 2 * intermediate] bf16, the output of a merged gate/up GEMM (vLLM layout: first
``intermediate`` columns are gate, the rest up); W_down: [hidden, intermediate] bf16 (Gaussian, std
intermediate^-0.5); y: [M, hidden] bf16. Eager writes silu(gate) * up (bf16, 117 MB) and reads it
back in the GEMM; a fused kernel computes it while loading the GEMM's A tiles.
Eager H100 estimate: SiLU-mul over 235 MB in / 117 MB out ~0.2 ms + 481 GFLOP bf16 GEMM ~0.8 ms
= ~1 ms (Llama-3-8B MLP, 4096 tokens; measured 0.95 ms).
"""

import torch
import torch.nn as nn

from reference_ops.llama import swiglu

M = 4096  # tokens
hidden = 4096
intermediate = 14336

KBENCH = {
    "dtype": "bfloat16",
    # eager rounds silu(g) and silu(g) * u to bf16 before a 14336-term GEMM (errors random,
    # averaging), then rounds the output: ~1-2 bf16 ulps of |y| ~ 1; 2e-2, zeros fail.
    "atol": 2e-2,
    "rtol": 2e-2,
    "shapes": {"odd": {"M": 1000, "intermediate": 11007, "hidden": 4000}, "decode": {"M": 512}},
    "cpu_shapes": {"small": {"M": 64, "hidden": 96, "intermediate": 128},
                   "odd": {"M": 37, "hidden": 53, "intermediate": 83}},
    "flops": lambda s: 2 * s["M"] * s["hidden"] * s["intermediate"] + 5 * s["M"] * s["intermediate"],
    "bytes": lambda s: 2 * (2 * s["M"] * s["intermediate"] + s["hidden"] * s["intermediate"] + s["M"] * s["hidden"]),
    "tags": ["gemm", "prologue", "swiglu", "mlp", "compute-bound"],
}


class Model(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.intermediate = intermediate
        self.down_proj = nn.Linear(intermediate, hidden, bias=False, dtype=torch.bfloat16)
        with torch.no_grad():
            self.down_proj.weight.normal_(0.0, intermediate**-0.5)

    def forward(self, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.split(self.intermediate, dim=-1)
        return self.down_proj(swiglu(gate, up))


def get_inputs():
    # gate_up: [M, 2 * intermediate], unit variance like a Gaussian-initialized projection
    return [torch.randn(M, 2 * intermediate, dtype=torch.bfloat16)]


def get_init_inputs():
    return [hidden, intermediate]
