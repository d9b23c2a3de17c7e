"""Per-token cross-entropy over a 128k vocabulary (reduction "none"), the LM-head loss:
loss[t] = logsumexp(logits[t]) - logits[t, target[t]] computed in fp32 from bf16 logits
[tokens, vocab] and int64 targets [tokens]; output [tokens] fp32. Targets equal to -100
(~1/8 of tokens: padding) are ignored and give exactly 0. Rows have different temperatures
(std 0.5 to 3.5). A fused kernel streams each row once (online max/sum) and picks the target.
H100 estimate: 1.05 GB of logits; eager (upcast, log_softmax, gather) moves ~8 GB -> ~3 ms;
peak ~5.3 GB.
Measured: 4.4 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

from reference_ops.losses import cross_entropy_per_token

tokens = 4096
vocab = 128256  # Llama-3 vocabulary
ignore_index = -100

KBENCH = {
    "dtype": "bfloat16",
    # Losses are ~1-40 in fp32; the logsumexp is good to ~1e-6 relative, so rtol 1e-5 / atol
    # 1e-4 leave ~10x. Ignored rows must be exactly 0 (atol is far below any real loss).
    "atol": 1e-4,
    "rtol": 1e-5,
    "shapes": {"odd": {"tokens": 1000, "vocab": 100003}, "long_seq": {"tokens": 16384, "vocab": 32000}},
    "cpu_shapes": {"small": {"tokens": 16, "vocab": 2048}, "odd": {"tokens": 9, "vocab": 1001}},
    "flops": lambda s: 4 * s["tokens"] * s["vocab"],
    "bytes": lambda s: 2 * s["tokens"] * s["vocab"] + 8 * s["tokens"] + 4 * s["tokens"],
    "tags": ["loss", "softmax", "reduction", "memory-bound", "bf16"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy_per_token(logits, target, ignore_index)


def get_inputs():
    # logits: [tokens, vocab] bf16, per-row std in [0.5, 3.5]; target: [tokens] int64
    temperature = torch.rand(tokens, 1) * 3 + 0.5
    logits = torch.randn(tokens, vocab).mul_(temperature).to(torch.bfloat16)
    target = torch.randint(0, vocab, (tokens,))
    target = target.masked_fill(torch.rand(tokens) < 0.125, ignore_index)
    return [logits, target]


def get_init_inputs():
    return []
