"""A 3-layer MLP with ReLU in bf16: three GEMMs with bias+ReLU epilogues, intermediate
activations [batch_size, hidden_size] written and read between them."""

import torch
import torch.nn as nn

batch_size = 8192  # tokens
input_size = 2048
hidden_size = 8192
output_size = 2048

KBENCH = {
    "dtype": "bfloat16",
    # Outputs have std ~0.1. Each layer rounds its output to bf16 (2^-9 relative); measured
    # against fp64 that is ~2e-3 absolute at worst, so atol 5e-3 leaves 2.5x for GPU reduction
    # orders while zeros (and unfused-but-wrong epilogues) fail.
    "atol": 5e-3,
    "rtol": 2e-2,
    "shapes": {
        "odd": {"batch_size": 1000, "input_size": 1021, "hidden_size": 4093, "output_size": 509},
        "small_batch": {"batch_size": 64},
    },
    "cpu_shapes": {
        "small": {"batch_size": 16, "input_size": 64, "hidden_size": 128, "output_size": 32},
        "odd": {"batch_size": 3, "input_size": 37, "hidden_size": 67, "output_size": 19},
    },
    "flops": lambda s: 2 * s["batch_size"] * (s["input_size"] * s["hidden_size"]
                                              + s["hidden_size"] ** 2
                                              + s["hidden_size"] * s["output_size"]),
    "bytes": lambda s: 2 * (s["batch_size"] * (s["input_size"] + s["output_size"])
                            + (s["input_size"] + 1) * s["hidden_size"]
                            + (s["hidden_size"] + 1) * s["hidden_size"]
                            + (s["hidden_size"] + 1) * s["output_size"]),
    "tags": ["gemm", "fusion", "mlp", "compute-bound"],
}


class Model(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)
        self.fc3 = nn.Linear(hidden_size, output_size)
        self.to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x))  # [batch_size, hidden_size]
        x = torch.relu(self.fc2(x))  # [batch_size, hidden_size]
        return self.fc3(x)  # [batch_size, output_size]


def get_inputs():
    # x: [batch_size, input_size] bf16
    return [torch.randn(batch_size, input_size, dtype=torch.bfloat16)]


def get_init_inputs():
    return [input_size, hidden_size, output_size]
