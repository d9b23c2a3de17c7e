"""Non-causal scaled-dot-product attention in bf16 (torch.nn.functional.scaled_dot_product_attention,
scale 1/sqrt(head_dim), no dropout): every query attends to every key. q, k, v and the output are
[batch_size, num_heads, seq_len, head_dim] bf16, contiguous (Llama-3-8B heads: 32 x 128, no
GQA). Queries are scaled so the logits have std ~2 and attention is peaked, as in trained
models; a flash-style kernel keeps the softmax online in fp32 and may round P to bf16.
H100 estimate: 4*4*32*4096^2*128 = 1.1 TFLOP -> ~3 ms eager (flash backend, ~400 TFLOP/s);
q, k, v, o 0.27 GB each.
Measured: 1.6 ms eager at the main shape on an H100 (torch 2.11)."""

import torch
import torch.nn as nn

batch_size = 4
num_heads = 32
seq_len = 4096
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
    "flops": lambda s: 4 * s["batch_size"] * s["num_heads"] * s["seq_len"] ** 2 * s["head_dim"],
    "bytes": lambda s: 4 * 2 * s["batch_size"] * s["num_heads"] * s["seq_len"] * s["head_dim"],
    "tags": ["attention", "compute-bound", "bf16"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=False)


def get_inputs():
    # q, k, v: [batch_size, num_heads, seq_len, head_dim] bf16; logits q.k/sqrt(d) ~ N(0, 4)
    shape = (batch_size, num_heads, seq_len, head_dim)
    q = (torch.randn(shape) * 2).to(torch.bfloat16)
    k = torch.randn(shape, dtype=torch.bfloat16)
    v = torch.randn(shape, dtype=torch.bfloat16)
    return [q, k, v]


def get_init_inputs():
    return []
