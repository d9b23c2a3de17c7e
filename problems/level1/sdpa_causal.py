"""Causal scaled-dot-product attention in bf16 (torch.nn.functional.scaled_dot_product_attention,
scale 1/sqrt(head_dim), no dropout): query i attends to keys 0..i (top-left aligned, S_q = S_k,
so no row is fully masked). q, k, v and the output are [batch_size, num_heads, seq_len,
head_dim] bf16, contiguous (Llama-3-8B heads: 32 x 128, no GQA). Queries are scaled so the
logits have std ~2 and attention is peaked, as in trained models; a flash-style kernel keeps
the softmax online in fp32, may round P to bf16, and skips fully masked key blocks.
H100 estimate: 2*2*32*8192^2*128 = 1.1 TFLOP (half the square is masked) -> ~3 ms eager
(flash backend); q, k, v, o 0.27 GB each.
Measured: 1.8 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

batch_size = 2
num_heads = 32
seq_len = 8192
head_dim = 128

KBENCH = {
    "dtype": "bfloat16",
    # Outputs are ~0.1-1 in size; bf16 P and output roundings (2^-8 relative) put flash-style
    # kernels within ~1e-2 relative of the reference; atol 1e-2 covers near-zero outputs.
    "atol": 1e-2,
    "rtol": 2e-2,
    "fixed": ["num_heads", "head_dim"],
    "shapes": {"odd": {"batch_size": 3, "seq_len": 1999}, "long": {"batch_size": 1, "seq_len": 16384}},
    "cpu_shapes": {"small": {"batch_size": 1, "num_heads": 2, "seq_len": 64},
                   "odd": {"batch_size": 2, "num_heads": 1, "seq_len": 37}},
    "flops": lambda s: 2 * s["batch_size"] * s["num_heads"] * s["seq_len"] ** 2 * s["head_dim"],
    "bytes": lambda s: 4 * 2 * s["batch_size"] * s["num_heads"] * s["seq_len"] * s["head_dim"],
    "tags": ["attention", "compute-bound", "bf16", "causal"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


def get_inputs():
    # q, k, v: [batch_size, num_heads, seq_len, head_dim] bf16; logits q.k/sqrt(d) ~ N(0, 4)
    shape = (batch_size, num_heads, seq_len, head_dim)
    q = (torch.randn(shape) * 2).to(torch.bfloat16)
    k = torch.randn(shape, dtype=torch.bfloat16)
    v = torch.randn(shape, dtype=torch.bfloat16)
    return [q, k, v]


def get_init_inputs():
    return []
