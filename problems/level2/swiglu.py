"""SwiGLU gate/up projection: ``y = silu(x @ Wg^T) * (x @ Wu^T)``, the first half of a Llama MLP.

x: [M, hidden] bf16; gate and up weights: [intermediate, hidden] each (nn.Linear layout, no bias,
Gaussian with std hidden^-0.5 so both products have unit variance); y: [M, intermediate] bf16.
Eager runs two GEMMs, SiLU and a multiply, rounding to bf16 after each; a fused kernel shares
the x tile between the two GEMMs and applies silu(g) * u to the fp32 accumulators.
Eager H100 estimate: 963 GFLOP in two bf16 GEMMs ~1.6 ms + SiLU/mul passes over 117 MB ~0.15 ms
= ~1.8 ms (Llama-3-8B MLP on 4096 tokens; measured 1.45 ms).
"""

import torch
import torch.nn as nn

from reference_ops.llama import swiglu

M = 4096  # tokens
hidden = 4096
intermediate = 14336

KBENCH = {
    "dtype": "bfloat16",
    # two K=4096 GEMMs rounded to bf16, then silu and mul each rounded: eager lands up to
    # ~1.7e-2 (abs, near-zero products of a large factor) from an fp64 computation; 3e-2, zeros fail.
    "atol": 3e-2,
    "rtol": 3e-2,
    "shapes": {"odd": {"M": 1000, "intermediate": 11007}, "decode": {"M": 256}},
    "cpu_shapes": {"small": {"M": 64, "hidden": 128, "intermediate": 192},
                   "odd": {"M": 37, "hidden": 96, "intermediate": 83}},
    "flops": lambda s: 4 * s["M"] * s["hidden"] * s["intermediate"],
    "bytes": lambda s: 2 * (s["M"] * s["hidden"] + 2 * s["intermediate"] * s["hidden"] + s["M"] * s["intermediate"]),
    "tags": ["gemm", "swiglu", "mlp", "llama", "compute-bound"],
}


class Model(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False, dtype=torch.bfloat16)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False, dtype=torch.bfloat16)
        with torch.no_grad():
            self.gate_proj.weight.normal_(0.0, hidden**-0.5)
            self.up_proj.weight.normal_(0.0, hidden**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swiglu(self.gate_proj(x), self.up_proj(x))


def get_inputs():
    # x: [M, hidden]
    return [torch.randn(M, hidden, dtype=torch.bfloat16)]


def get_init_inputs():
    return [hidden, intermediate]
