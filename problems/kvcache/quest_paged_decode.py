"""Quest query-aware page selection + sparse paged decode attention.

Paged cache (vLLM-style pool): k_pages, v_pages [P, 16, Hkv, D] bf16; block_table [B, max_pages]
int32 maps a sequence's logical page j to a physical page; seq_lens [B] int32 (>= 64 * 16, so every
sequence has at least top_k pages); token t of a sequence lives at slot t % 16 of logical page t // 16;
slots past seq_len hold garbage and must be ignored. Page summaries (kept by Quest as the cache
fills): kmin, kmax [P, Hkv, D] bf16, the elementwise min / max of the page's valid keys.
q: [B, Hq, D] bf16 (one new token; GQA: query head h reads KV head h // (Hq / Hkv)).
1) Score each valid logical page per KV head: sum over the head's query heads of the Quest upper
   bound sum_d max(q_d * kmin_d, q_d * kmax_d), in fp32; pages past the sequence's end never count.
2) Select the top_k = 64 pages per (b, KV head), ties to the lowest logical page index.
3) out = softmax(q K^T / sqrt(D)) V over the valid tokens of the selected pages only (fp32 inside).
Outputs: pages [B, Hkv, 64] int64 logical page indices (the reference's ascending; any order
accepted), out [B, Hq, D] bf16. Check: pages in range and distinct, upper-bound sum >= the
reference's minus 0.02 x (its sum / 64), and out compared (atol 1e-3, rtol 2e-2) with attention
over the CANDIDATE's pages. Main shape: 32 sequences of 4k-8k tokens (16-token pages, budget 1024
tokens), Llama-3-8B heads. Eager H100: 2.0 ms measured (fp32 bound products over all pages,
then a gathered 1k-token attention), 2.1 GB peak.
"""

import torch
import torch.nn as nn

from reference_ops.kvcache_attention import salient_qk
from reference_ops.kvcache_select import (
    outputs_reason,
    quest_page_scores,
    quest_select_attend,
    quest_sparse_attention,
    selection_reason,
)

batch_size = 32
max_len = 8192  # longest sequence; lengths are drawn from [max(max_len / 2, 1024), max_len]
n_heads = 32
n_kv_heads = 8
head_dim = 128
page_size = 16
top_k = 64

_SCORE_TOL = 0.02  # allowed shortfall of the pages' upper-bound sum, in average selected pages
_OUT_TOL = (1e-3, 2e-2)  # bf16 output (mean |out| ~ 0.08), fp32 softmax over ~1k tokens


def _check(out, ref, inputs):
    """Valid, distinct, sufficient pages; out must be attention over the candidate's own pages."""
    from sandbox.compare import compare

    q, k_pages, v_pages, kmin, kmax, block_table, seq_lens = inputs
    bad = outputs_reason(out, ref)
    if bad:
        return bad
    pages, o = out
    scores = quest_page_scores(q, kmin, kmax, block_table, seq_lens, page_size)  # [B, Hkv, maxp]
    n_pages = ((seq_lens.long() + page_size - 1) // page_size)[:, None]  # [B, 1]
    bad = selection_reason(pages, scores, ref[0], n_pages, mean_frac=_SCORE_TOL, what="page")
    if bad:
        return bad
    want = quest_sparse_attention(q, k_pages, v_pages, block_table, seq_lens, pages, page_size).to(o.dtype)
    m, _ = compare(o, want, *_OUT_TOL)
    return f"out (vs attention over the returned pages): {m.reason}" if m else None


KBENCH = {
    "dtype": "bfloat16",
    # Judged by _check: pages by their upper-bound scores, out at bf16 tolerances (_OUT_TOL).
    "atol": _OUT_TOL[0],
    "rtol": _OUT_TOL[1],
    "check": _check,
    "shapes": {
        "odd": {"batch_size": 7, "max_len": 4093},
        "long": {"batch_size": 4, "max_len": 65536},
    },
    "cpu_shapes": {
        # page_size stays 16 everywhere: _check reads the module constant
        "small": {"batch_size": 2, "max_len": 512, "n_heads": 4, "n_kv_heads": 2, "head_dim": 32, "top_k": 8},
        "odd": {"batch_size": 3, "max_len": 301, "n_heads": 6, "n_kv_heads": 3, "head_dim": 24, "top_k": 9},
    },
    # bounds: ~3 flops per (page, q head, d); attention over top_k * page_size tokens
    "flops": lambda s: s["batch_size"] * s["n_heads"] * s["head_dim"] * (
        3 * -(-s["max_len"] // s["page_size"]) + 4 * s["top_k"] * s["page_size"]),
    # q, out; kmin/kmax of every page of every sequence; K/V of the selected pages; tables; pages out
    "bytes": lambda s: s["batch_size"] * (
        4 * s["n_heads"] * s["head_dim"]
        + 4 * -(-s["max_len"] // s["page_size"]) * (s["n_kv_heads"] * s["head_dim"] + 1)
        + 4 * s["n_kv_heads"] * s["top_k"] * s["page_size"] * s["head_dim"]
        + 8 * s["n_kv_heads"] * s["top_k"] + 4),
    "fixed": ["n_heads", "n_kv_heads", "head_dim", "page_size", "top_k"],
    "tags": ["kvcache", "selection", "quest", "paged", "sparse-attention", "decode", "gqa"],
}


class Model(nn.Module):
    def __init__(self, page_size: int, top_k: int):
        super().__init__()
        self.page_size = page_size
        self.top_k = top_k

    def forward(self, q, k_pages, v_pages, kmin, kmax, block_table, seq_lens):
        pages, out = quest_select_attend(q, k_pages, v_pages, kmin, kmax, block_table, seq_lens,
                                         self.page_size, self.top_k)
        return pages, out.to(q.dtype)


def get_inputs():
    # q: [B, Hq, D]; k_pages, v_pages: [P, page, Hkv, D] with P = B * max_pages (shuffled pool);
    # kmin, kmax: [P, Hkv, D]; block_table: [B, max_pages] int32; seq_lens: [B] int32.
    max_pages = -(-max_len // page_size)
    P = batch_size * max_pages
    lo = max(max_len // 2, top_k * page_size)
    seq_lens = torch.randint(lo, max_len + 1, (batch_size,), dtype=torch.int32)
    block_table = torch.randperm(P).view(batch_size, max_pages).to(torch.int32)
    q, k_seq = salient_qk(batch_size, n_heads, n_kv_heads, 1, max_pages * page_size, head_dim)
    # k_seq: [B, Hkv, T, D] in sequence order -> pool pages [P, page, Hkv, D]
    k_log = k_seq.view(batch_size, n_kv_heads, max_pages, page_size, head_dim).permute(0, 2, 3, 1, 4)
    k_pages = torch.empty(P, page_size, n_kv_heads, head_dim, dtype=torch.bfloat16)
    k_pages[block_table.long()] = k_log
    v_pages = torch.randn(P, page_size, n_kv_heads, head_dim, dtype=torch.bfloat16)
    pos = torch.arange(max_pages * page_size).view(max_pages, page_size)
    valid = (pos[None] < seq_lens.long()[:, None, None])[..., None, None]  # [B, maxp, page, 1, 1]
    big = torch.tensor(float("inf"), dtype=torch.bfloat16)
    kmin_log = torch.where(valid, k_log, big).amin(2)  # [B, maxp, Hkv, D]
    kmax_log = torch.where(valid, k_log, -big).amax(2)
    empty = ~valid.any(2)  # pages wholly past the end: summaries unused, store zeros
    kmin = torch.empty(P, n_kv_heads, head_dim, dtype=torch.bfloat16)
    kmax = torch.empty(P, n_kv_heads, head_dim, dtype=torch.bfloat16)
    kmin[block_table.long()] = kmin_log.masked_fill(empty, 0)
    kmax[block_table.long()] = kmax_log.masked_fill(empty, 0)
    return [q.squeeze(2), k_pages, v_pages, kmin, kmax, block_table, seq_lens]


def get_init_inputs():
    return [page_size, top_k]
