"""One GQA decode step over a paged KV cache with ragged sequence lengths (vLLM / FlashAttention
``block_table`` layout). q: [B, Hq, D] (one new token per sequence); k_cache, v_cache:
[num_blocks, page_size, Hkv, D], a pool of pages shared by all sequences (more pages than
used: unused pages hold garbage); block_table: [B, max_blocks] int32, page n of sequence b is
``block_table[b, n]`` (pages come from a random permutation of the pool; entries past a
sequence's last page are valid ids that must not be attended); seq_lens: [B] int32, token t
of sequence b sits at ``cache[block_table[b, t // page_size], t % page_size]`` and only
t < seq_lens[b] is attended (lengths are random in [max_seq_len // 2, max_seq_len], mostly not
a multiple of page_size; a length of 0 would output 0). Query head h reads kv head
h // (Hq // Hkv); scale D**-0.5; fp32 softmax; output [B, Hq, D] bf16.
Eager on an H100: ~7 ms measured (page gather + fp32 copies of ~1 GiB of KV); peak memory ~4.7 GB.
"""

import torch
import torch.nn as nn

from reference_ops.attention import paged_gqa_decode

batch_size = 64
max_seq_len = 4096  # longest context; each sequence has between half of it and all of it
num_heads = 32
num_kv_heads = 8
head_dim = 128
page_size = 16


def _max_blocks(s):
    return -(-s["max_seq_len"] // s["page_size"])


def _min_tokens(s):
    # seq_lens >= max_seq_len // 2: a lower bound on the KV any correct kernel must read
    return s["batch_size"] * (s["max_seq_len"] // 2)


KBENCH = {
    "dtype": "bfloat16",
    # fp32 softmax over >= 2k keys; a split-KV kernel with bf16 P lands ~2.6e-3 rel-L2 and
    # <= 0.1 of the elementwise bound
    "atol": 1e-2,
    "rtol": 2e-2,
    "shapes": {
        "odd": {"batch_size": 13, "max_seq_len": 4093},
        "long_ctx": {"batch_size": 8, "max_seq_len": 16384},
    },
    "cpu_shapes": {
        "small": {"batch_size": 3, "max_seq_len": 64, "num_heads": 8, "num_kv_heads": 2},
        "odd": {"batch_size": 5, "max_seq_len": 45, "num_heads": 4, "num_kv_heads": 1},
    },
    "flops": lambda s: 4 * s["num_heads"] * s["head_dim"] * _min_tokens(s),
    "bytes": lambda s: (
        2 * 2 * _min_tokens(s) * s["num_kv_heads"] * s["head_dim"]  # K and V pages, bf16
        + 2 * 2 * s["batch_size"] * s["num_heads"] * s["head_dim"]  # q in, out
        + 4 * s["batch_size"] * (_max_blocks(s) + 1)  # block table, lengths
    ),
    "fixed": ["num_heads", "num_kv_heads", "head_dim", "page_size"],
    "tags": ["attention", "decode", "paged-kv", "gqa", "memory-bound", "ragged"],
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, q, k_cache, v_cache, block_table, seq_lens):
        return paged_gqa_decode(q, k_cache, v_cache, block_table, seq_lens).to(q.dtype)


def get_inputs():
    n_blk = -(-max_seq_len // page_size)
    num_blocks = batch_size * n_blk + batch_size * n_blk // 4 + 1  # a pool with spare pages
    # q: [B, Hq, D]; k_cache, v_cache: [num_blocks, page_size, Hkv, D]
    q = torch.randn(batch_size, num_heads, head_dim, dtype=torch.bfloat16)
    k_cache = torch.randn(num_blocks, page_size, num_kv_heads, head_dim, dtype=torch.bfloat16)
    v_cache = torch.randn(num_blocks, page_size, num_kv_heads, head_dim, dtype=torch.bfloat16)
    # block_table: [B, max_blocks] distinct pages, scattered over the pool
    block_table = torch.randperm(num_blocks, dtype=torch.int32)[: batch_size * n_blk]
    block_table = block_table.view(batch_size, n_blk)
    # seq_lens: [B] in [max_seq_len // 2, max_seq_len]
    seq_lens = torch.randint(max_seq_len // 2, max_seq_len + 1, (batch_size,), dtype=torch.int32)
    return [q, k_cache, v_cache, block_table, seq_lens]


def get_init_inputs():
    return []
