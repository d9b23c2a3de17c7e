"""KV-cache token/page selection: SnapKV, ChunkKV, H2O and Quest references, plus the helpers
problem checks use to judge a candidate's selection.

Selections are deterministic: scores in fp32, the k best taken by a stable descending sort, so
ties go to the lowest index; the reference returns selected indices in ascending order.
GQA convention: query head h belongs to KV head h // (Hq // Hkv).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from reference_ops.checks import tensor_reason
from reference_ops.kvcache_attention import decode_attention, masked_softmax

__all__ = [
    "topk_lowest_index", "gather_tokens",
    "window_probs", "snapkv_scores", "snapkv_select",
    "chunkkv_scores", "chunkkv_token_index", "chunkkv_select",
    "h2o_step",
    "quest_page_scores", "quest_sparse_attention", "quest_select_attend",
    "outputs_reason", "selection_reason",
]


def topk_lowest_index(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest fp32 scores along the last axis, ties to the lowest index
    (in descending-score order)."""
    order = torch.sort(scores.float(), dim=-1, descending=True, stable=True).indices
    return order[..., :k]


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    # x: [B, H, S, D], idx: [B, H, C] (or [B, 1, C]) -> [B, H, C, D]
    idx = idx.expand(x.shape[0], x.shape[1], idx.shape[-1])
    return x.gather(2, idx[..., None].expand(-1, -1, -1, x.shape[-1]))


# ---------------------------------------------------------------------------------------
# Observation-window scores (SnapKV, ChunkKV)
# ---------------------------------------------------------------------------------------
def window_probs(q_win: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Attention of the last w prompt queries over all S keys (causal inside the window).
    q_win: [B, Hq, w, D] (positions S-w..S-1), k: [B, Hkv, S, D] -> [B, Hkv, G, w, S] fp32."""
    B, Hq, w, D = q_win.shape
    Hkv, S = k.shape[1], k.shape[2]
    assert Hq % Hkv == 0 and w <= S
    q = q_win.float().view(B, Hkv, Hq // Hkv, w, D)
    logits = torch.einsum("bhgwd,bhsd->bhgws", q, k.float()) / math.sqrt(D)
    q_pos = torch.arange(S - w, S, device=k.device)
    causal = torch.arange(S, device=k.device)[None, :] <= q_pos[:, None]  # [w, S]
    return masked_softmax(logits, causal)


def snapkv_scores(q_win: torch.Tensor, k: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """SnapKV votes for the S - w prefix tokens, per KV head: attention probabilities summed over
    the window queries and the KV head's query heads, then avg-pooled (kernel_size odd, stride 1,
    zero padding kernel_size // 2 counted in the average). -> [B, Hkv, S - w] fp32."""
    B, Hq, w, D = q_win.shape
    Hkv, S = k.shape[1], k.shape[2]
    assert kernel_size % 2 == 1
    L = S - w
    votes = window_probs(q_win, k)[..., :L].sum(dim=(2, 3))  # [B, Hkv, L]
    pooled = F.avg_pool1d(votes.reshape(B * Hkv, 1, L), kernel_size, stride=1, padding=kernel_size // 2)
    return pooled.view(B, Hkv, L)


def snapkv_select(q_win: torch.Tensor, k: torch.Tensor, v: torch.Tensor, capacity: int,
                  kernel_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> idx [B, Hkv, C] int64 (ascending), k_out, v_out [B, Hkv, C + w, D]: the selected prefix
    tokens in idx's order followed by the w window tokens."""
    w, S = q_win.shape[2], k.shape[2]
    L = S - w
    assert capacity <= L
    idx = topk_lowest_index(snapkv_scores(q_win, k, kernel_size), capacity).sort(-1).values
    k_out = torch.cat([gather_tokens(k[:, :, :L], idx), k[:, :, L:]], dim=2)
    v_out = torch.cat([gather_tokens(v[:, :, :L], idx), v[:, :, L:]], dim=2)
    return idx, k_out, v_out


def chunkkv_scores(q_win: torch.Tensor, k: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """ChunkKV: window-query attention over the prefix summed over ALL query heads (one
    selection shared by every head), then over each chunk of chunk_size consecutive prefix tokens.
    Only whole chunks count: n_chunks = (S - w) // chunk_size. -> [B, n_chunks] fp32."""
    B, w = q_win.shape[0], q_win.shape[2]
    L = k.shape[2] - w
    n_chunks = L // chunk_size
    votes = window_probs(q_win, k)[..., : n_chunks * chunk_size].sum(dim=(1, 2, 3))  # [B, n*c]
    return votes.view(B, n_chunks, chunk_size).sum(-1)


def chunkkv_token_index(chunk_idx: torch.Tensor, chunk_size: int, n_chunks: int, S: int) -> torch.Tensor:
    """Kept token positions: the chosen chunks' tokens in chunk_idx's order, then every token from
    n_chunks * chunk_size to S (the partial chunk and the observation window). -> [B, T] int64."""
    B = chunk_idx.shape[0]
    offs = torch.arange(chunk_size, device=chunk_idx.device)
    tok = (chunk_idx[:, :, None] * chunk_size + offs).reshape(B, -1)
    tail = torch.arange(n_chunks * chunk_size, S, device=chunk_idx.device).expand(B, -1)
    return torch.cat([tok, tail], dim=1)


def chunkkv_select(q_win: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_keep: int,
                   chunk_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> chunk_idx [B, n_keep] int64 (ascending), k_out, v_out [B, Hkv, n_keep * c + tail, D]."""
    scores = chunkkv_scores(q_win, k, chunk_size)  # [B, n_chunks]
    n_chunks = scores.shape[1]
    assert n_keep <= n_chunks
    cidx = topk_lowest_index(scores, n_keep).sort(-1).values
    tok = chunkkv_token_index(cidx, chunk_size, n_chunks, k.shape[2])[:, None, :]  # [B, 1, T]
    return cidx, gather_tokens(k, tok), gather_tokens(v, tok)


# ---------------------------------------------------------------------------------------
# H2O
# ---------------------------------------------------------------------------------------
def h2o_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, acc: torch.Tensor,
             recent: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One H2O decode step over a full cache (the new token already in the last slot).
    q: [B, Hq, D]; k, v: [B, Hkv, S, D]; acc: [B, Hkv, S] fp32 accumulated attention.
    -> out [B, Hq, D] fp32, acc_new = acc + this step's probabilities summed over each KV head's
    query heads [B, Hkv, S] fp32, evict [B, Hkv] int64 = argmin of acc_new over the slots
    [0, S - recent) (the recent window is protected), lowest index on ties."""
    B, Hq, _ = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    assert recent < S
    out, p = decode_attention(q, k, v)  # p: [B, Hq, S]
    acc_new = acc.float() + p.view(B, Hkv, Hq // Hkv, S).sum(2)
    evict = torch.argmin(acc_new[..., : S - recent], dim=-1)  # first minimum
    return out, acc_new, evict


# ---------------------------------------------------------------------------------------
# Quest
# ---------------------------------------------------------------------------------------
def quest_page_scores(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, block_table: torch.Tensor,
                      seq_lens: torch.Tensor, page_size: int) -> torch.Tensor:
    """Quest upper bounds per logical page: for query head h, sum_d max(q_d * kmin_d, q_d * kmax_d)
    >= q . k for every key of the page; per KV head, the sum over its query heads.
    q: [B, Hq, D]; kmin, kmax: [P, Hkv, D]; block_table: [B, max_pages]; seq_lens: [B]
    -> [B, Hkv, max_pages] fp32, -inf for pages past the sequence's end."""
    B, Hq, D = q.shape
    Hkv = kmin.shape[1]
    bt = block_table.long()
    kmn = kmin[bt].float()[:, :, :, None, :]  # [B, maxp, Hkv, 1, D]
    kmx = kmax[bt].float()[:, :, :, None, :]
    qf = q.float().view(B, 1, Hkv, Hq // Hkv, D)
    ub = torch.maximum(qf * kmn, qf * kmx).sum(-1).sum(-1)  # [B, maxp, Hkv]
    n_pages = (seq_lens.long() + page_size - 1) // page_size  # [B]
    valid = torch.arange(bt.shape[1], device=q.device)[None, :] < n_pages[:, None]  # [B, maxp]
    return ub.transpose(1, 2).masked_fill(~valid[:, None, :], float("-inf"))


def quest_sparse_attention(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor, block_table: torch.Tensor,
                           seq_lens: torch.Tensor, pages: torch.Tensor, page_size: int) -> torch.Tensor:
    """Attention of q over the tokens of the selected logical pages (per KV head), tokens past
    seq_len masked. k_pages, v_pages: [P, page_size, Hkv, D]; pages: [B, Hkv, T] -> [B, Hq, D] fp32."""
    B, Hkv, T = pages.shape
    D = k_pages.shape[-1]
    phys = block_table.long().gather(1, pages.reshape(B, -1)).view(B, Hkv, T)  # [B, Hkv, T]
    h = torch.arange(Hkv, device=q.device)[None, :, None]
    k_sel = k_pages[phys, :, h, :].reshape(B, Hkv, T * page_size, D)  # [B, Hkv, T*page, D]
    v_sel = v_pages[phys, :, h, :].reshape(B, Hkv, T * page_size, D)
    pos = (pages[..., None] * page_size + torch.arange(page_size, device=q.device)).reshape(B, Hkv, -1)
    valid = pos < seq_lens.long()[:, None, None]
    return decode_attention(q, k_sel, v_sel, valid)[0]


def quest_select_attend(q, k_pages, v_pages, kmin, kmax, block_table, seq_lens, page_size: int,
                        top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> pages [B, Hkv, top_k] int64 logical page numbers (ascending), out [B, Hq, D] fp32."""
    scores = quest_page_scores(q, kmin, kmax, block_table, seq_lens, page_size)
    pages = topk_lowest_index(scores, top_k).sort(-1).values
    return pages, quest_sparse_attention(q, k_pages, v_pages, block_table, seq_lens, pages, page_size)


# ---------------------------------------------------------------------------------------
# Helpers for problem checks: reasons, never exceptions
# ---------------------------------------------------------------------------------------
def outputs_reason(out, ref: tuple[torch.Tensor, ...]) -> str | None:
    """Reason if ``out`` is not a tuple/list of plain tensors with ``ref``'s shapes, dtypes, devices."""
    if not isinstance(out, (tuple, list)) or len(out) != len(ref):
        return f"expected a tuple of {len(ref)} tensors, got {type(out).__name__}" + (
            f" of length {len(out)}" if isinstance(out, (tuple, list)) else "")
    for i, (o, r) in enumerate(zip(out, ref, strict=True)):
        bad = tensor_reason(o, r, f"output[{i}]")
        if bad:
            return bad
    return None


def selection_reason(idx: torch.Tensor, scores: torch.Tensor, ref_idx: torch.Tensor, n_valid,
                     mean_frac: float, what: str = "index") -> str | None:
    """Judge a selection of C indices per row against the reference's.

    idx, ref_idx: [..., C] int64; scores: [..., L] fp32 (the reference's scores); n_valid: int or
    tensor broadcastable to [...] (indices must lie in [0, n_valid)). Valid: in range, no
    duplicates in a row. Sufficient: the selection's total score >= the reference's total minus
    ``mean_frac`` of one average selected score (|reference total| / C), so near-ties may swap but
    trading a selected index for a clearly worse one fails."""
    nv = torch.as_tensor(n_valid, device=idx.device)
    bad = (idx < 0) | (idx >= nv[..., None] if nv.dim() else idx >= nv)
    if bool(bad.any()):
        where = bad.nonzero()[0].tolist()
        return (f"{int(bad.sum())} selected {what}s out of range (first at {where}: "
                f"{int(idx[tuple(where)])})")
    srt = idx.sort(-1).values
    dup = srt[..., 1:] == srt[..., :-1]
    if bool(dup.any()):
        where = dup.nonzero()[0].tolist()
        return f"duplicate selected {what} {int(srt[tuple(where)])} in row {where[:-1]}"
    got = scores.double().gather(-1, idx).sum(-1)
    best = scores.double().gather(-1, ref_idx).sum(-1)
    short = best - got
    allowed = mean_frac * best.abs() / idx.shape[-1]
    over = short > allowed
    if bool(over.any()):
        i = int((short - allowed).flatten().argmax())
        row = [int(t) for t in torch.unravel_index(torch.tensor(i), short.shape)]
        return (f"{int(over.sum())} of {over.numel()} rows select insufficient {what}s: in row {row} "
                f"the selection's score sum is {float(got.flatten()[i]):.6g}, the best is "
                f"{float(best.flatten()[i]):.6g} (allowed shortfall {float(allowed.flatten()[i]):.3g})")
    return None
