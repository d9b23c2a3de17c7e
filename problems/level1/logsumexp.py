"""Row-wise log-sum-exp over vocabulary-wide fp32 logits, y[t] = log sum_v exp(x[t, v]), x
[tokens, vocab] row-major, y [tokens] fp32: the normalizer of a softmax / cross-entropy.
Rows have different temperatures (std 0.5 to 3.5), so y varies widely across rows; a kernel
must subtract the row maximum (or keep an online running maximum) to avoid overflow.
H100 estimate: 2.1 GB read once -> ~0.7 ms at ~3 TB/s.
Measured: 4.5 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

tokens = 4096
vocab = 128256

KBENCH = {
    "dtype": "float32",
    # fp32 exp and a reordered 128k-term sum agree with torch to ~1e-6 relative on outputs of
    # ~12-30; rtol 1e-5 leaves 10x, atol is negligible at that scale.
    "atol": 1e-4,
    "rtol": 1e-5,
    "shapes": {"odd": {"tokens": 1000, "vocab": 100003}, "short_rows": {"tokens": 131072, "vocab": 4093}},
    "cpu_shapes": {"small": {"tokens": 16, "vocab": 2048}, "odd": {"tokens": 5, "vocab": 1001}},
    "flops": lambda s: 3 * s["tokens"] * s["vocab"],
    "bytes": lambda s: 4 * (s["tokens"] * s["vocab"] + s["tokens"]),
    "tags": ["reduction", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(x, dim=-1)


def get_inputs():
    # x: [tokens, vocab] fp32 logits, per-row std in [0.5, 3.5]
    temperature = torch.rand(tokens, 1) * 3 + 0.5
    return [torch.randn(tokens, vocab).mul_(temperature)]


def get_init_inputs():
    return []
