"""relu(x @ W^T + b) with the weights of an nn.Linear (KernelBench's level-2 shape of problem).

Test fixture for the policy corpus: calling the nn.Linear submodule is a reference call,
using its .weight/.bias in a kernel is honest.
"""

import torch
import torch.nn as nn

batch_size = 256
in_features = 1024
out_features = 512

KBENCH = {
    "dtype": "float32",
    "atol": 1e-2,  # tl.dot uses TF32 on NVIDIA GPUs by default
    "rtol": 1e-2,
    "cpu_shapes": {"small": {"batch_size": 8, "in_features": 48, "out_features": 40},
                   "odd": {"batch_size": 5, "in_features": 33, "out_features": 17}},
    "tags": ["matmul", "fused"],
}


class Model(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x))


def get_inputs():
    # x: [batch_size, in_features]
    return [torch.randn(batch_size, in_features)]


def get_init_inputs():
    return [in_features, out_features]
