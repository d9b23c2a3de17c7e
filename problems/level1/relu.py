"""ReLU over a large activation tensor (memory-bound: one read, one write)."""

import torch
import torch.nn as nn

batch_size = 16
dim = 1 << 23  # 128M elements, 512 MiB in fp32: far past L2 (eager ~0.35 ms on an H100)

KBENCH = {
    "dtype": "float32",
    "atol": 0.0,  # relu is exact in any precision that keeps the input's
    "rtol": 0.0,
    "shapes": {"odd": {"batch_size": 7, "dim": 1_000_003}},
    "cpu_shapes": {"small": {"batch_size": 4, "dim": 1000}, "odd": {"batch_size": 3, "dim": 257}},
    "flops": lambda s: s["batch_size"] * s["dim"],
    "bytes": lambda s: 2 * 4 * s["batch_size"] * s["dim"],
    "tags": ["elementwise", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def get_inputs():
    # x: [batch_size, dim]
    return [torch.randn(batch_size, dim)]


def get_init_inputs():
    return []
