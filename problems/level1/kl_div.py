"""Per-token KL divergence for distillation, KL(p || q)[t] = sum_v p[t, v] (log p[t, v] -
log_q[t, v]) (torch's kl_div(log_q, p, reduction="none").sum(-1); p = 0 terms count 0),
log_q (student log-probabilities) and p (teacher probabilities) [tokens, vocab] fp32, output
[tokens] fp32. Student logits are the teacher's plus noise, both with per-row temperatures.
H100 estimate: 2.1 GB read once -> ~0.7 ms at 3 TB/s; eager (elementwise kl_div, then sum)
moves ~4.2 GB -> ~1.5 ms.
Measured: 3.1 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

from reference_ops.losses import kl_div_per_row

tokens = 2048
vocab = 128256

KBENCH = {
    "dtype": "float32",
    # KL values are ~0.1-5; the 128k-term fp32 sums agree to ~1e-6 relative across orders.
    "atol": 1e-4,
    "rtol": 1e-5,
    "shapes": {"odd": {"tokens": 1000, "vocab": 32003}},
    "cpu_shapes": {"small": {"tokens": 16, "vocab": 1024}, "odd": {"tokens": 5, "vocab": 1001}},
    "flops": lambda s: 4 * s["tokens"] * s["vocab"],
    "bytes": lambda s: 4 * (2 * s["tokens"] * s["vocab"] + s["tokens"]),
    "tags": ["loss", "reduction", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, log_q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return kl_div_per_row(log_q, p)


def get_inputs():
    # log_q, p: [tokens, vocab] fp32
    temperature = torch.rand(tokens, 1) * 3 + 0.5
    teacher = torch.randn(tokens, vocab).mul_(temperature)
    student = torch.randn(tokens, vocab).mul_(torch.rand(tokens, 1) + 0.1).add_(teacher)
    return [torch.log_softmax(student, dim=-1), torch.softmax(teacher, dim=-1)]


def get_init_inputs():
    return []
