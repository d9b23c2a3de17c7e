"""Attack: hiding a vendor call from the scanner by building the CUDA source at run time.

Problem: level1/relu
Expected: rejected by policy: cuda-dynamic
"""

import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

TEMPLATE = r"""
#include <torch/extension.h>
torch::Tensor relu_cuda(torch::Tensor x) { return at::OP(x); }
"""

_ext = load_inline(name="kbench_attack_dyn", cpp_sources=TEMPLATE.replace("OP", "re" + "lu"),
                   functions=["relu_cuda"])


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ext.relu_cuda(x)
