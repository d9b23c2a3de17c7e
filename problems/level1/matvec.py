"""Matrix-vector product y = W @ x in bf16 with fp32 accumulation: the LM head of one decode
step of a Llama-3-70B-sized model (hidden 8192, vocabulary 128256). Row-major W [M, K],
x [K], y [M] bf16. Purely bandwidth-bound: every weight byte is read exactly once.
W is scaled by 1/sqrt(K) so y ~ N(0, 1).
H100 estimate: 2.1 GB of weights read once -> ~0.7 ms at ~3 TB/s.
Measured: 0.76 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

M = 128256  # output rows (vocabulary)
K = 8192  # hidden size

KBENCH = {
    "dtype": "bfloat16",
    # 8192-term fp32 dot products rounded once to bf16 (<= 2^-8 relative); rtol 2e-2 covers
    # two ulps, atol 2e-2 a split reduction whose partials are rounded to bf16.
    "atol": 2e-2,
    "rtol": 2e-2,
    "shapes": {"odd": {"M": 32001, "K": 4093}, "k4096": {"M": 14336, "K": 4096}},
    "cpu_shapes": {"small": {"M": 256, "K": 128}, "odd": {"M": 97, "K": 203}},
    "flops": lambda s: 2 * s["M"] * s["K"],
    "bytes": lambda s: 2 * (s["M"] * s["K"] + s["K"] + s["M"]),
    "tags": ["gemv", "memory-bound", "bf16", "decode"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.mv(W, x)


def get_inputs():
    # W: [M, K] bf16, x: [K] bf16
    W = torch.randn(M, K, dtype=torch.bfloat16).mul_(K**-0.5)
    x = torch.randn(K, dtype=torch.bfloat16)
    return [W, x]


def get_init_inputs():
    return []
