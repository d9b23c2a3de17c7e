"""Block-sparse causal GQA prefill with a given block mask (MoBA / NSA-style block selection).
q: [B, Hq, S, D]; k, v: [B, Hkv, S, D] (query head h reads kv head h // (Hq // Hkv));
block_mask: [B, Hq, nb, nb] bool input, nb = ceil(S / block_size) (the last block may be
partial). Query i sees key j iff j <= i and block_mask[b, h, i // block_size, j // block_size].
The mask holds the diagonal block of every query block plus ``topk_blocks`` earlier key
blocks chosen at random per (batch, head, query block) (all earlier blocks when fewer exist)
and nothing above the diagonal, so no row is empty; a row whose mask allows no key would
output 0. Scale D**-0.5; fp32 softmax; output [B, Hq, S, D] bf16. A good kernel skips
masked-out tiles: ~(topk_blocks + 1) / (nb / 2) of the dense causal work.
Eager on an H100: ~15 ms measured (dense masked reference in 1024-query chunks, O(S^2) whatever
the sparsity); peak memory ~2.5 GB.
"""

import torch
import torch.nn as nn

from reference_ops.attention import block_sparse_causal

batch_size = 1
seq_len = 4096
num_heads = 32
num_kv_heads = 8
head_dim = 128
block_size = 128
topk_blocks = 4


def _pairs(s):
    # exact number of attended (query, key) pairs: every selected off-diagonal block is full
    n, bs, top = s["seq_len"], s["block_size"], s["topk_blocks"]
    nb = -(-n // bs)
    total = 0
    for i in range(nb):
        r = min(bs, n - i * bs)  # query rows in block i
        total += r * bs * min(i, top) + r * (r + 1) // 2
    return total


KBENCH = {
    "dtype": "bfloat16",
    # a flash kernel with bf16 P lands ~2.6e-3 rel-L2; ignoring the mask (dense causal) ~0.6
    "atol": 1e-2,
    "rtol": 2e-2,
    "shapes": {
        "odd": {"batch_size": 2, "seq_len": 3001},
        "topk8": {"batch_size": 1, "seq_len": 5120, "topk_blocks": 8},
    },
    "cpu_shapes": {
        "small": {"batch_size": 1, "seq_len": 64, "num_heads": 4, "num_kv_heads": 2,
                  "block_size": 16, "topk_blocks": 2},
        "odd": {"batch_size": 2, "seq_len": 45, "num_heads": 4, "num_kv_heads": 1,
                "block_size": 16, "topk_blocks": 1},
    },
    "flops": lambda s: 4 * s["batch_size"] * s["num_heads"] * s["head_dim"] * _pairs(s),
    "bytes": lambda s: 2 * s["batch_size"] * s["seq_len"] * s["head_dim"]
    * (2 * s["num_heads"] + 2 * s["num_kv_heads"])
    + s["batch_size"] * s["num_heads"] * (-(-s["seq_len"] // s["block_size"])) ** 2,
    "fixed": ["num_heads", "num_kv_heads", "head_dim", "block_size", "topk_blocks"],
    "tags": ["attention", "prefill", "block-sparse", "gqa", "causal"],
}


class Model(nn.Module):
    def __init__(self, block_size: int):
        super().__init__()
        self.block_size = block_size

    def forward(self, q, k, v, block_mask):
        return block_sparse_causal(q, k, v, block_mask, self.block_size).to(q.dtype)


def get_inputs():
    # q: [B, Hq, S, D]; k, v: [B, Hkv, S, D]
    q = torch.randn(batch_size, num_heads, seq_len, head_dim, dtype=torch.bfloat16)
    k = torch.randn(batch_size, num_kv_heads, seq_len, head_dim, dtype=torch.bfloat16)
    v = torch.randn(batch_size, num_kv_heads, seq_len, head_dim, dtype=torch.bfloat16)
    # block_mask: [B, Hq, nb, nb] = diagonal + topk_blocks random earlier blocks per row
    nb = -(-seq_len // block_size)
    i = torch.arange(nb)[:, None]
    j = torch.arange(nb)[None, :]
    score = torch.rand(batch_size, num_heads, nb, nb).masked_fill(j >= i, -1.0)
    pick = score.topk(min(topk_blocks, nb), dim=-1).indices
    chosen = torch.zeros(batch_size, num_heads, nb, nb, dtype=torch.bool).scatter(-1, pick, True)
    block_mask = (chosen & (j < i)) | (j == i)
    return [q, k, v, block_mask]


def get_init_inputs():
    return [block_size]
