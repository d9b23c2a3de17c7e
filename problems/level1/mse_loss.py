"""Per-sample mean squared error (reduction "none", then the mean over features):
loss[b] = mean_d (pred[b, d] - target[b, d])^2, pred and target [batch_size, dim] fp32,
output [batch_size] fp32. Predictions have per-sample scales (0.25 to 3.25), so losses vary
across samples and a constant cannot pass.
H100 estimate: 2.1 GB read once -> ~0.7 ms at 3 TB/s; eager (squared error, then mean)
moves ~4.3 GB -> ~1.5 ms.
Measured: 1.4 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

from reference_ops.losses import mse_per_row

batch_size = 4096
dim = 65536

KBENCH = {
    "dtype": "float32",
    # Means of 65k positive fp32 terms: reordering changes them by ~1e-7 relative; 1e-5 / 1e-5
    # leave ~100x. A subsampled mean is off by ~1e-2 relative and fails.
    "atol": 1e-5,
    "rtol": 1e-5,
    "shapes": {"odd": {"batch_size": 1000, "dim": 100003}},
    "cpu_shapes": {"small": {"batch_size": 16, "dim": 512}, "odd": {"batch_size": 7, "dim": 1001}},
    "flops": lambda s: 3 * s["batch_size"] * s["dim"],
    "bytes": lambda s: 4 * (2 * s["batch_size"] * s["dim"] + s["batch_size"]),
    "tags": ["loss", "reduction", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mse_per_row(pred, target)


def get_inputs():
    # pred, target: [batch_size, dim] fp32; pred has a per-sample scale in [0.25, 3.25]
    scale = torch.rand(batch_size, 1) * 3 + 0.25
    pred = torch.randn(batch_size, dim).mul_(scale)
    target = torch.randn(batch_size, dim)
    return [pred, target]


def get_init_inputs():
    return []
