"""One BERT-large encoder layer (post-LN) over right-padded sequences of different lengths, fp16.

x: [batch_size, seq_len, hidden] fp16 (hidden = num_heads * head_dim = 1024); lengths:
[batch_size] int64 in [1, seq_len], sequence b's valid tokens are positions < lengths[b]. Returns
[batch_size, seq_len, hidden] fp16:
  a = LN1(x + MHA(x)),  y = LN2(a + MLP(a)),  y = 0 at padding positions (t >= lengths[b]).
MHA: fused QKV linear with bias, softmax(q k^T / 8) over the valid keys of the sequence only
(padding keys masked out; every row has at least one valid key), output projection with bias;
MLP 1024 -> 4096 -> 1024 with biases and erf GELU; LayerNorm eps 1e-12, stats in fp32. A kernel
may skip padding tokens entirely (FasterTransformer's "remove padding"): their output is 0.
Eager H100 estimate: 412 GFLOP of fp16 GEMMs ~0.75 ms + masked SDPA (34 GFLOP) ~0.15 ms +
LayerNorm/GELU/add passes ~0.3 ms = ~1.2 ms (32 x 512 tokens, about half of them padding; measured 1.27 ms).
"""

import torch
import torch.nn as nn

from reference_ops.transformer import init_block_params, post_ln_block

batch_size = 32
seq_len = 512
num_heads = 16
head_dim = 64
ffn_dim = 4096
eps = 1e-12

KBENCH = {
    "dtype": "float16",
    # fp16 GEMMs (K up to 4096) with fp16 roundings between them and two LayerNorms that
    # renormalize to ~unit scale: eager is 5.5e-4 rel-L2 from fp64, worst element at 30% of
    # this bound (measured on an H100); ignoring the mask or the padding zeros fails.
    "atol": 1e-2,
    "rtol": 1e-2,
    "shapes": {"odd": {"batch_size": 5, "seq_len": 397}, "base": {"num_heads": 12, "ffn_dim": 3072, "batch_size": 64}},
    "cpu_shapes": {"small": {"batch_size": 3, "seq_len": 16, "num_heads": 4, "head_dim": 16, "ffn_dim": 128},
                   "odd": {"batch_size": 2, "seq_len": 23, "num_heads": 3, "head_dim": 16, "ffn_dim": 80}},
    "flops": lambda s: 2 * s["batch_size"] * s["seq_len"] * (
        4 * (s["num_heads"] * s["head_dim"]) ** 2 + 2 * s["num_heads"] * s["head_dim"] * s["ffn_dim"]
        + 2 * s["seq_len"] * s["num_heads"] * s["head_dim"]),
    "bytes": lambda s: 2 * (2 * s["batch_size"] * s["seq_len"] * s["num_heads"] * s["head_dim"]
                            + 4 * (s["num_heads"] * s["head_dim"]) ** 2 + 2 * s["num_heads"] * s["head_dim"] * s["ffn_dim"])
                       + 8 * s["batch_size"],
    "tags": ["bert", "transformer", "encoder", "padding-mask", "layernorm", "fp16", "model"],
}


class Model(nn.Module):
    def __init__(self, num_heads: int, head_dim: int, ffn_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.p = nn.ParameterDict(init_block_params(num_heads * head_dim, ffn_dim, torch.float16))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return post_ln_block(x, lengths, dict(self.p), self.num_heads, eps)


def get_inputs():
    # x: [B, S, hidden]; lengths: [B]
    x = torch.randn(batch_size, seq_len, num_heads * head_dim, dtype=torch.float16)
    return [x, torch.randint(1, seq_len + 1, (batch_size,))]


def get_init_inputs():
    return [num_heads, head_dim, ffn_dim]
