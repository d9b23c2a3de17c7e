"""MoE router: softmax over expert logits, top-k selection, renormalization (vLLM's topk_softmax).

logits: [num_tokens, num_experts] bf16 router output. Returns (weights [num_tokens, top_k] float32,
ids [num_tokens, top_k] int32): scores = softmax(logits) in fp32, the top_k highest-scoring
experts per token, weights = their scores / the sum of the chosen scores. Tie-breaking: equal
scores go to the lowest expert index first (bf16 logits tie often: 256 draws on a ~2^-8 grid).
Any order within a row is accepted, and so is any selection whose scores are as high as the
reference's (the check recomputes the softmax from the logits); each weight must belong to its id.
Eager H100 estimate: softmax + stable sort of 256-wide rows + gather/sum/div over 8.4 M scores
~0.3-0.5 ms (DeepSeek-V3 sized router, 32k tokens; measured 0.87 ms).
"""

import torch
import torch.nn as nn

from reference_ops.moe import check_topk_routing, softmax_topk

num_tokens = 32768
num_experts = 256
top_k = 8

KBENCH = {
    "dtype": "float32",
    # weights are fp32 ratios of fp32 softmax scores (~1e-7 relative apart between correct
    # kernels); the check compares chosen scores and weights to 1e-4 relative.
    "atol": 1e-6,
    "rtol": 1e-4,
    "check": check_topk_routing,
    "shapes": {"odd": {"num_tokens": 4093, "num_experts": 160, "top_k": 6}, "mixtral": {"num_experts": 8, "top_k": 2}},
    "cpu_shapes": {"small": {"num_tokens": 64, "num_experts": 64, "top_k": 8},
                   "odd": {"num_tokens": 37, "num_experts": 60, "top_k": 4}},
    "flops": lambda s: 5 * s["num_tokens"] * s["num_experts"],
    "bytes": lambda s: 2 * s["num_tokens"] * s["num_experts"] + 8 * s["num_tokens"] * s["top_k"],
    "tags": ["moe", "router", "softmax", "topk", "selection"],
}


class Model(nn.Module):
    def __init__(self, top_k: int):
        super().__init__()
        self.top_k = top_k

    def forward(self, logits: torch.Tensor):
        return softmax_topk(logits, self.top_k, renormalize=True)


def get_inputs():
    # logits: [T, E]
    return [torch.randn(num_tokens, num_experts, dtype=torch.bfloat16)]


def get_init_inputs():
    return [top_k]
