"""Attention scores: ``P = softmax(Q @ K^T / sqrt(head_dim))`` over the keys, materialized.

q, k: [batch_size, num_heads, seq_len, head_dim] bf16 contiguous; P: [batch_size, num_heads,
seq_len, seq_len] bf16, each row summing to 1 (no mask: encoder self-attention, e.g. to export
attention maps). As eager attention does it: the Q @ K^T product is rounded to bf16, then scaled
and soft-maxed in fp32 and rounded to bf16 once. A fused kernel keeps the scores in registers
and writes P once; the 268 MB write of P is the floor.
Eager H100 estimate: 34 GFLOP matmul ~0.1 ms + bf16 scores, fp32 scale and softmax passes over
0.27-0.54 GB tensors (~2.7 GB moved) ~1 ms = ~1.1 ms (measured 1.6 ms).
"""

import math

import torch
import torch.nn as nn

batch_size = 4
num_heads = 32
seq_len = 1024
head_dim = 128

KBENCH = {
    "dtype": "bfloat16",
    # probabilities ~1/seq_len in bf16: eager rounds Q@K^T (|s| <~ 40) to bf16, moving the
    # exponent by up to ~7e-3, plus output rounding 2^-9: measured <= 1.6% from fp64; rtol 3e-2,
    # atol far below 1/seq_len; zeros or uniform rows fail the relative-L2 bound.
    "atol": 1e-5,
    "rtol": 3e-2,
    "shapes": {"odd": {"batch_size": 3, "seq_len": 1000}, "long": {"batch_size": 1, "seq_len": 2048}},
    "cpu_shapes": {"small": {"batch_size": 2, "num_heads": 2, "seq_len": 64, "head_dim": 32},
                   "odd": {"batch_size": 1, "num_heads": 3, "seq_len": 37, "head_dim": 16}},
    "flops": lambda s: 2 * s["batch_size"] * s["num_heads"] * s["seq_len"] ** 2 * (s["head_dim"] + 2),
    "bytes": lambda s: 2 * s["batch_size"] * s["num_heads"] * s["seq_len"] * (2 * s["head_dim"] + s["seq_len"]),
    "tags": ["matmul", "softmax", "attention-scores", "memory-bound"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        scores = torch.matmul(q, k.transpose(-1, -2)).float() * (1.0 / math.sqrt(q.shape[-1]))
        return torch.softmax(scores, dim=-1).to(q.dtype)


def get_inputs():
    # q, k: [B, H, S, D]
    shape = (batch_size, num_heads, seq_len, head_dim)
    return [torch.randn(shape, dtype=torch.bfloat16), torch.randn(shape, dtype=torch.bfloat16)]


def get_init_inputs():
    return []
