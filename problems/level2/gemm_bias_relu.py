"""y = relu(x @ W^T + b) in fp16: an FFN up-projection with its bias and activation, the
epilogue a kernel can fuse into the GEMM instead of a second pass over y."""

import torch
import torch.nn as nn

batch_size = 8192  # tokens
in_features = 4096  # Llama-3-8B hidden size
out_features = 14336  # Llama-3-8B FFN size

KBENCH = {
    "dtype": "float16",
    # fp32 accumulation, bias added in fp32, one rounding to fp16: ~1e-3 absolute on outputs
    # of std ~0.6. atol/rtol 1e-2 leave ~10x; zeros fail on the half of y that is positive.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {
        "odd": {"batch_size": 1000, "in_features": 4093, "out_features": 4099},
        "small_batch": {"batch_size": 128},
    },
    "cpu_shapes": {
        "small": {"batch_size": 16, "in_features": 64, "out_features": 48},
        "odd": {"batch_size": 5, "in_features": 37, "out_features": 23},
    },
    "flops": lambda s: 2 * s["batch_size"] * s["in_features"] * s["out_features"],
    "bytes": lambda s: 2 * (s["batch_size"] * s["in_features"]
                            + s["out_features"] * (s["in_features"] + 1)
                            + s["batch_size"] * s["out_features"]),
    "tags": ["gemm", "fusion", "epilogue", "compute-bound"],
}


class Model(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features).to(torch.float16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x))


def get_inputs():
    # x: [batch_size, in_features] fp16
    return [torch.randn(batch_size, in_features, dtype=torch.float16)]


def get_init_inputs():
    return [in_features, out_features]
