"""Logit soft-capping + log-softmax (Gemma 2's final logits): ``log_softmax(c * tanh(z / c))``, c = 30.

logits: [num_tokens, vocab] bf16 (std 10, so many exceed the cap and tanh bends them); output:
[num_tokens, vocab] float32 log-probabilities, computed in fp32 from the bf16 logits. Log-probs
rather than probabilities: with capped logits near 30 the probabilities are dominated by a few
entries, while every log-prob is checked to the same relative precision (scoring, RL log-probs).
Row-wise: a max / logsumexp pass and a write pass; eager runs ~5 fp32 kernels over 1 GB tensors.
Eager H100 estimate: cast, div, tanh, mul, log_softmax over 0.5-1 GB tensors (~9 GB moved) ~3 ms (measured 4.3 ms).
"""

import torch
import torch.nn as nn

num_tokens = 1024
vocab = 256000  # Gemma 2
softcap = 30.0

KBENCH = {
    "dtype": "float32",
    # fp32 math on |log p| ~ 10-60: eager vs a fused kernel differ ~1e-6 relative; fast tanh/exp
    # (~5e-4 relative) still pass at 1e-3, bf16 arithmetic (~4e-3) or skipping the cap does not.
    "atol": 1e-3,
    "rtol": 1e-3,
    "shapes": {"odd": {"num_tokens": 333, "vocab": 256001}, "llama": {"num_tokens": 2048, "vocab": 128256}},
    "cpu_shapes": {"small": {"num_tokens": 16, "vocab": 1024}, "odd": {"num_tokens": 7, "vocab": 1001}},
    "flops": lambda s: 8 * s["num_tokens"] * s["vocab"],
    "bytes": lambda s: 6 * s["num_tokens"] * s["vocab"],
    "tags": ["softmax", "softcap", "logits", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        z = torch.tanh(logits.float() / softcap) * softcap
        return torch.log_softmax(z, dim=-1)


def get_inputs():
    # logits: [T, V]
    return [(torch.randn(num_tokens, vocab) * 10.0).to(torch.bfloat16)]


def get_init_inputs():
    return []
