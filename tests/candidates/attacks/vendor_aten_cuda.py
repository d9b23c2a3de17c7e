"""Attack: reference op called from C++ — at::relu, x.clamp_min(0) and ADL relu(x) in an extension.

Problem: level1/relu
Expected: rejected by policy: cuda-vendor
"""

import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

CPP_SRC = r"""
#include <torch/extension.h>

torch::Tensor relu_a(torch::Tensor x) { return at::relu(x); }
torch::Tensor relu_b(torch::Tensor x) { return x.clamp_min(0); }
torch::Tensor relu_c(torch::Tensor x) { return relu(x); }
torch::Tensor relu_d(torch::Tensor x) { return (x > 0) * x; }
"""

_ext = load_inline(name="kbench_attack_aten", cpp_sources=CPP_SRC,
                   functions=["relu_a", "relu_b", "relu_c", "relu_d"])


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ext.relu_a(x)
