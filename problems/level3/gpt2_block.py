"""One GPT-2 XL block (pre-LN, causal): ``x + attn(LN1(x))``, then ``+ MLP(LN2(x))`` with tanh GELU, fp16.

x: [batch_size, seq_len, hidden] fp16, hidden = num_heads * head_dim = 25 * 64 = 1600 (not a
multiple of 128); returns the same shape, fp16. Attention: fused QKV linear [3 hidden, hidden] with
bias (rows q, k, v, head-major), causal softmax(q k^T / sqrt(64)), output projection with bias;
MLP: 1600 -> 6400 -> 1600 with biases and GELU tanh approximation ("gelu_new"); LayerNorm eps
1e-5 (stats in fp32). Parameters from reference_ops.transformer.init_block_params.
Eager H100 estimate: 503 GFLOP of fp16 GEMMs ~0.9 ms + causal SDPA (~27 GFLOP) ~0.1 ms +
LayerNorm/GELU/add passes ~0.3 ms = ~1.3 ms (8 x 1024 tokens; measured 1.14 ms).
"""

import torch
import torch.nn as nn

from reference_ops.transformer import init_block_params, pre_ln_block

batch_size = 8
seq_len = 1024
num_heads = 25
head_dim = 64
mlp_dim = 6400
eps = 1e-5

KBENCH = {
    "dtype": "float16",
    # fp16 (2^-11) GEMMs with fp16 roundings between them, softmax, two residuals: eager is
    # 5e-4 rel-L2 from fp64, worst element at 30% of this bound (measured on an H100);
    # a missing mask, branch or bias fails.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {"odd": {"batch_size": 3, "seq_len": 1000}, "medium": {"num_heads": 16, "mlp_dim": 4096, "seq_len": 2048}},
    "cpu_shapes": {"small": {"batch_size": 2, "seq_len": 16, "num_heads": 4, "head_dim": 16, "mlp_dim": 128},
                   "odd": {"batch_size": 1, "seq_len": 29, "num_heads": 5, "head_dim": 8, "mlp_dim": 72}},
    "flops": lambda s: 2 * s["batch_size"] * s["seq_len"] * (
        4 * (s["num_heads"] * s["head_dim"]) ** 2 + 2 * s["num_heads"] * s["head_dim"] * s["mlp_dim"]
        + s["seq_len"] * s["num_heads"] * s["head_dim"]),
    "bytes": lambda s: 2 * (2 * s["batch_size"] * s["seq_len"] * s["num_heads"] * s["head_dim"]
                            + 4 * (s["num_heads"] * s["head_dim"]) ** 2 + 2 * s["num_heads"] * s["head_dim"] * s["mlp_dim"]),
    "tags": ["gpt2", "transformer", "decoder", "causal", "layernorm", "gelu", "fp16", "model"],
}


class Model(nn.Module):
    def __init__(self, num_heads: int, head_dim: int, mlp_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.p = nn.ParameterDict(init_block_params(num_heads * head_dim, mlp_dim, torch.float16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pre_ln_block(x, dict(self.p), self.num_heads, eps, causal=True, gelu="tanh")


def get_inputs():
    # x: [B, S, hidden]
    return [torch.randn(batch_size, seq_len, num_heads * head_dim, dtype=torch.float16)]


def get_init_inputs():
    return [num_heads, head_dim, mlp_dim]
