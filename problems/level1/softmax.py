"""Softmax over vocabulary-wide rows (memory-bound). A row of 128k fp32 values is 0.5 MB,
far more than one SM's shared memory, so a kernel streams it: an online max/sum pass, then
a normalizing pass."""

import torch
import torch.nn as nn

batch_size = 2048  # token positions whose next-token distribution is wanted
dim = 128256  # Llama-3 vocabulary: a multiple of 128, not of 4096-wide tiles

KBENCH = {
    "dtype": "float32",
    # Outputs are ~1/dim, from ~1e-5 down to ~1e-10, so the test is relative: fp32 exp and a
    # reordered sum over 128k terms agree with torch to ~1e-6 relative (rtol leaves 100x);
    # atol only covers values near fp32's floor. Zeros or unnormalized exps fail.
    "atol": 1e-8,
    "rtol": 1e-4,
    "shapes": {
        "odd": {"batch_size": 37, "dim": 1_000_003},
        "short_rows": {"batch_size": 16384, "dim": 4093},
    },
    "cpu_shapes": {"small": {"batch_size": 4, "dim": 1000}, "odd": {"batch_size": 3, "dim": 4099}},
    "flops": lambda s: 5 * s["batch_size"] * s["dim"],  # max, subtract, exp, sum, scale
    "bytes": lambda s: 2 * 4 * s["batch_size"] * s["dim"],
    "tags": ["reduction", "softmax", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=-1)


def get_inputs():
    # x: [batch_size, dim] logits
    return [torch.randn(batch_size, dim)]


def get_init_inputs():
    return []
