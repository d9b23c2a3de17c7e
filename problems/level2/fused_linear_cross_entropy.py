"""Fused linear + cross-entropy over a 128k vocabulary: the LM head and its per-token loss.

h: [num_tokens, hidden] bf16 (final hidden states); targets: [num_tokens] int64 in [0, vocab)
or -100 (ignored, ~10% of tokens, e.g. prompt or padding); the LM head weight: [vocab, hidden]
bf16 (no bias). Returns loss: [num_tokens] float32, ``logsumexp(z) - z[target]`` with
``z = h @ W^T``, and exactly 0 for ignored tokens. Eager rounds z to bf16 and materializes it
(1.05 GB) plus float32 copies for the softmax (~4.2 GB): the logits are the big intermediate,
and a fused kernel streams vocabulary chunks with an online logsumexp instead.
Eager H100 estimate: 4.3 TFLOP bf16 GEMM ~7 ms + ~6 GB of fp32 passes ~2.5 ms = ~10 ms;
peak memory ~6.5 GB (measured 10.2 ms, 6.4 GB).
"""

import torch
import torch.nn as nn

from reference_ops.fused_linear_cross_entropy import linear_cross_entropy

num_tokens = 4096
hidden = 4096
vocab = 128256  # Llama 3
ignore_index = -100

KBENCH = {
    "dtype": "float32",
    # losses ~14 +- 2 from bf16 logits (|z| <~ 10, rounding 2^-9 relative): eager and a kernel
    # that keeps fp32 logits differ by <~ 0.03 per token; atol 5e-2 / rtol 5e-3 allow that, while
    # a constant loss (rel. error ~0.15) or zeros fail.
    "atol": 5e-2,
    "rtol": 5e-3,
    "shapes": {"odd": {"num_tokens": 1023, "vocab": 32001}, "short": {"num_tokens": 2048}},
    "cpu_shapes": {"small": {"num_tokens": 32, "hidden": 64, "vocab": 1000},
                   "odd": {"num_tokens": 19, "hidden": 48, "vocab": 517}},
    "flops": lambda s: 2 * s["num_tokens"] * s["hidden"] * s["vocab"],
    "bytes": lambda s: 2 * (s["num_tokens"] * s["hidden"] + s["vocab"] * s["hidden"]) + 12 * s["num_tokens"],
    "tags": ["gemm", "cross-entropy", "lm-head", "large-vocab", "compute-bound"],
}


class Model(nn.Module):
    def __init__(self, hidden: int, vocab: int):
        super().__init__()
        # logits with std ~2, as a trained LM head gives: the loss varies per token
        self.lm_head = nn.Linear(hidden, vocab, bias=False, dtype=torch.bfloat16)
        with torch.no_grad():
            self.lm_head.weight.normal_(0.0, 2.0 * hidden**-0.5)

    def forward(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return linear_cross_entropy(h, self.lm_head.weight, targets, ignore_index)


def get_inputs():
    # h: [T, hidden]; targets: [T]
    h = torch.randn(num_tokens, hidden, dtype=torch.bfloat16)
    targets = torch.randint(0, vocab, (num_tokens,))
    targets = torch.where(torch.rand(num_tokens) < 0.1, ignore_index, targets)
    return [h, targets]


def get_init_inputs():
    return [hidden, vocab]
