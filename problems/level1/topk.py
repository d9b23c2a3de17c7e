"""Top-k of bf16 vocabulary logits (top-k sampling's candidate set, k = 64): for each row of
x [tokens, vocab] bf16, the k largest values sorted descending (values [tokens, k] bf16) and
their column indices (indices [tokens, k] int64). bf16 logits tie often. Canonical tie rule:
scores compared in fp32, lowest index first; the check (reference_ops.selection) requires the
values to match exactly and accepts any distinct indices that point at them, so any tie order
passes. k is fixed.
H100 estimate: 1.05 GB read once -> ~0.35 ms at 3 TB/s; eager torch.topk (radix select) ~2 ms.
Measured: 3.9 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

from reference_ops.selection import check_topk_last, topk_last

tokens = 4096
vocab = 128256
top_k = 64

KBENCH = {
    "dtype": "bfloat16",
    "atol": 0.0,  # selected values are copies of inputs: exact
    "rtol": 0.0,
    "check": check_topk_last,
    "fixed": ["top_k"],
    "shapes": {"odd": {"tokens": 1000, "vocab": 100003}, "decode": {"tokens": 64}},
    "cpu_shapes": {"small": {"tokens": 8, "vocab": 2048}, "odd": {"tokens": 5, "vocab": 1001}},
    "flops": lambda s: s["tokens"] * s["vocab"],
    "bytes": lambda s: 2 * s["tokens"] * s["vocab"] + (2 + 8) * s["tokens"] * s["top_k"],
    "tags": ["selection", "top-k", "memory-bound", "bf16"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return topk_last(x, top_k)


def get_inputs():
    # x: [tokens, vocab] bf16 logits, per-row std in [0.5, 3.5]
    temperature = torch.rand(tokens, 1) * 3 + 0.5
    return [torch.randn(tokens, vocab).mul_(temperature).to(torch.bfloat16)]


def get_init_inputs():
    return []
