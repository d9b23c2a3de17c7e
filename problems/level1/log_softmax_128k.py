"""Log-softmax over vocabulary-wide fp32 rows, y = x - logsumexp(x) along the last dim, x and
y [tokens, vocab] row-major fp32. A 128k row (0.5 MB) exceeds shared memory, so a kernel
streams it twice (online max/sum, then write) or once per row with a split reduction. Rows
have different temperatures (std 0.5 to 3.5).
H100 estimate: 2.1 GB read + 2.1 GB written -> ~1.4 ms at ~3 TB/s.
Measured: 2.8 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

tokens = 4096
vocab = 128256  # Llama-3 vocabulary

KBENCH = {
    "dtype": "float32",
    # Outputs are ~ -5 to -60; the logsumexp is good to ~1e-6 relative in fp32 and the
    # subtraction rounds once, so rtol 1e-5 / atol 1e-4 leave >10x. Returning x fails.
    "atol": 1e-4,
    "rtol": 1e-5,
    "shapes": {"odd": {"tokens": 1000, "vocab": 100003}, "short_rows": {"tokens": 65536, "vocab": 4093}},
    "cpu_shapes": {"small": {"tokens": 8, "vocab": 2048}, "odd": {"tokens": 5, "vocab": 1001}},
    "flops": lambda s: 4 * s["tokens"] * s["vocab"],
    "bytes": lambda s: 2 * 4 * s["tokens"] * s["vocab"],
    "tags": ["softmax", "reduction", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(x, dim=-1)


def get_inputs():
    # x: [tokens, vocab] fp32 logits, per-row std in [0.5, 3.5]
    temperature = torch.rand(tokens, 1) * 3 + 0.5
    return [torch.randn(tokens, vocab).mul_(temperature)]


def get_init_inputs():
    return []
