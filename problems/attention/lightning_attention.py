"""Causal linear attention with per-head exponential decay (Lightning Attention / TransNormerLLM
/ MiniMax-01 core): o_t = sum_{s <= t} lambda_h^(t - s) (q_t . k_s) v_s, no softmax, no
scale, no output norm. q, k, v: [B, H, S, D] bf16; the model's [H] fp32 buffer ``slopes``
gives lambda_h = exp(-slopes[h]) with ALiBi-style slopes 2**(-8 (h + 1) / H) (effective
memory from ~2 to ~500 tokens). Chunkable: split S into chunks, exact intra-chunk products
plus a [D, D] fp32 state per head carried across chunks (never form lambda^(-t): it
overflows). q and k are drawn with std D**-0.25 so q.k ~ N(0, 1); outputs then have std ~1
to ~11 by head. Output [B, H, S, D] bf16.
Eager on an H100: ~11 ms measured (the reference is the chunked form in fp32, 256-token
chunks); peak memory ~3.6 GB.
"""

import torch
import torch.nn as nn

from reference_ops.attention import alibi_slopes
from reference_ops.attention_linear import lightning_attention

batch_size = 4
seq_len = 8192
num_heads = 32
head_dim = 128

KBENCH = {
    "dtype": "bfloat16",
    # a chunked kernel (bf16 operands for P.V and q.state, fp32 state) lands ~3.2e-3 rel-L2
    # but up to ~0.17 absolute on outputs of std ~1..11 by head (overall ~5), hence atol 0.3
    # (6% of the output std); dropping the decay is >10x off
    "atol": 0.3,
    "rtol": 2e-2,
    "shapes": {
        "odd": {"batch_size": 3, "seq_len": 3001},
        "long": {"batch_size": 1, "seq_len": 16384},
    },
    "cpu_shapes": {
        "small": {"batch_size": 1, "seq_len": 64, "num_heads": 4},
        "odd": {"batch_size": 2, "seq_len": 77, "num_heads": 2},
    },
    # recurrent form: k v^T into the state and q S out, 2 D^2 each per token and head
    "flops": lambda s: 4 * s["batch_size"] * s["num_heads"] * s["seq_len"] * s["head_dim"] ** 2,
    "bytes": lambda s: 4 * 2 * s["batch_size"] * s["num_heads"] * s["seq_len"] * s["head_dim"]
    + 4 * s["num_heads"],
    "fixed": ["num_heads", "head_dim"],
    "tags": ["attention", "linear-attention", "decay", "lightning", "causal", "recurrent"],
}


class Model(nn.Module):
    def __init__(self, num_heads: int):
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(num_heads))  # [H] fp32, decay exp(-slope)

    def forward(self, q, k, v):
        return lightning_attention(q, k, v, self.slopes).to(q.dtype)


def get_inputs():
    # q, k, v: [B, H, S, D]
    shape = (batch_size, num_heads, seq_len, head_dim)
    qk_std = head_dim ** -0.25
    q = (torch.randn(shape) * qk_std).to(torch.bfloat16)
    k = (torch.randn(shape) * qk_std).to(torch.bfloat16)
    v = torch.randn(shape, dtype=torch.bfloat16)
    return [q, k, v]


def get_init_inputs():
    return [num_heads]
