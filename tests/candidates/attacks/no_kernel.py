"""Attack: no kernel at all — a pure-Python elementwise loop dressed up as an implementation.

Problem: level1/relu
Expected: rejected by policy: no-kernel
"""

import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        values = [v if v > 0.0 else 0.0 for v in x.flatten().tolist()]
        return torch.tensor(values, dtype=x.dtype, device=x.device).view(x.shape)
