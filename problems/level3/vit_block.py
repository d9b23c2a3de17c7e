"""One ViT-B/16 encoder block (pre-LN): ``x + MHA(LN1(x))``, then ``+ MLP(LN2(x))`` with exact GELU.

x: [batch_size, seq_len, hidden] bf16 with seq_len = 197 (196 patches + class token), hidden =
num_heads * head_dim = 768; returns the same shape, bf16. MHA: fused QKV linear [3 hidden, hidden]
with bias (rows q, k, v, head-major), non-causal softmax(q k^T / sqrt(head_dim)) over all 197
tokens, output projection with bias; MLP: hidden -> mlp_dim -> hidden with biases and erf GELU;
LayerNorm eps 1e-6 (stats in fp32). Parameters from reference_ops.transformer.init_block_params.
Eager H100 estimate: 357 GFLOP of bf16 GEMMs ~0.7 ms + SDPA (15 GFLOP) and LayerNorm/GELU/add
passes over 39-155 MB ~0.3 ms = ~1 ms (batch 128; measured 0.93 ms).
"""

import torch
import torch.nn as nn

from reference_ops.transformer import init_block_params, pre_ln_block

batch_size = 128
seq_len = 197
num_heads = 12
head_dim = 64
mlp_dim = 3072
eps = 1e-6

KBENCH = {
    "dtype": "bfloat16",
    # four bf16 GEMMs (K up to 3072) with bf16 roundings between them, softmax, two residuals:
    # eager is 4.3e-3 rel-L2 from fp64, worst element ~2.5e-2 (measured on an H100); 4e-2,
    # while a missing branch, bias or norm, or zeros, fail.
    "atol": 4e-2,
    "rtol": 4e-2,
    "shapes": {"odd": {"batch_size": 7, "seq_len": 577}, "large": {"batch_size": 64, "num_heads": 16, "mlp_dim": 4096}},
    "cpu_shapes": {"small": {"batch_size": 2, "seq_len": 17, "num_heads": 4, "head_dim": 16, "mlp_dim": 128},
                   "odd": {"batch_size": 1, "seq_len": 37, "num_heads": 3, "head_dim": 16, "mlp_dim": 80}},
    "flops": lambda s: 2 * s["batch_size"] * s["seq_len"] * (
        4 * (s["num_heads"] * s["head_dim"]) ** 2 + 2 * s["num_heads"] * s["head_dim"] * s["mlp_dim"]
        + 2 * s["seq_len"] * s["num_heads"] * s["head_dim"]),
    "bytes": lambda s: 2 * (2 * s["batch_size"] * s["seq_len"] * s["num_heads"] * s["head_dim"]
                            + 4 * (s["num_heads"] * s["head_dim"]) ** 2 + 2 * s["num_heads"] * s["head_dim"] * s["mlp_dim"]),
    "tags": ["vit", "transformer", "encoder", "layernorm", "gelu", "vision", "model"],
}


class Model(nn.Module):
    def __init__(self, num_heads: int, head_dim: int, mlp_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.p = nn.ParameterDict(init_block_params(num_heads * head_dim, mlp_dim, torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pre_ln_block(x, dict(self.p), self.num_heads, eps, causal=False, gelu="none")


def get_inputs():
    # x: [B, S, hidden]
    return [torch.randn(batch_size, seq_len, num_heads * head_dim, dtype=torch.bfloat16)]


def get_init_inputs():
    return [num_heads, head_dim, mlp_dim]
