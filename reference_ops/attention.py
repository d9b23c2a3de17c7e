"""Softmax-attention references in plain PyTorch: masks, biases, softcapping, paged KV caches,
packed documents, shared prefixes, block-sparse masks and 2-D neighbourhoods.

Conventions shared by every function here:
  * math in fp32 whatever the input dtype; results are fp32 (the problem casts them);
  * GQA: query head ``h`` reads kv head ``h // (Hq // Hkv)`` (consecutive query heads share);
  * ``scale`` defaults to ``head_dim ** -0.5``; softcapping, when asked, is applied to the
    scaled logits (``cap * tanh(logits / cap)``) before any bias or mask;
  * masks are bool, ``True`` = may attend; a query row with no allowed key outputs exactly 0;
  * references that would materialise ``[B, H, S, S]`` fp32 scores work on query chunks.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "masked_softmax",
    "attention",
    "attention_by_query_chunks",
    "paged_gqa_decode",
    "softcap_sliding_window",
    "alibi_slopes",
    "alibi_causal",
    "varlen_causal",
    "shared_prefix_decode",
    "block_sparse_causal",
    "neighborhood_starts",
    "neighborhood_attention_2d",
]

Tensor = torch.Tensor
# (i, j) -> tensor broadcastable to [B, Hq, len(i), len(j)]; i: [Cq, 1], j: [1, Ck] int64
PairFn = Callable[[Tensor, Tensor], Tensor]


def masked_softmax(s: Tensor, mask: Tensor | None = None) -> Tensor:
    """Softmax over the last dim of fp32 ``s``; rows where ``mask`` allows nothing give 0."""
    if mask is None:
        return torch.softmax(s, dim=-1)
    s = s.masked_fill(~mask, float("-inf"))
    m = s.amax(dim=-1, keepdim=True).clamp_min(torch.finfo(s.dtype).min)  # -inf rows -> finite
    p = torch.exp(s - m)  # masked entries: exp(-inf) = 0
    return p / p.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)


def _grouped(x: Tensor | None, n_kv: int, group: int) -> Tensor | None:
    # x: [b, h, Sq, Sk] with h in {1, Hq} (or fewer dims) -> broadcastable to [B, Hkv, G, Sq, Sk]
    if x is None:
        return None
    while x.dim() < 4:
        x = x.unsqueeze(0)
    if x.shape[1] == 1:
        return x.unsqueeze(2)
    return x.unflatten(1, (n_kv, group))


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float | None = None,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    softcap: float | None = None,
) -> Tensor:
    """``softmax(softcap(q k^T * scale) + bias, masked) v`` in fp32.

    q: [B, Hq, Sq, D]; k: [B, Hkv, Sk, D]; v: [B, Hkv, Sk, Dv]; Hq % Hkv == 0.
    mask (bool) and bias (float) broadcast to [B, Hq, Sq, Sk]. Returns [B, Hq, Sq, Dv] fp32.
    """
    B, Hq, Sq, D = q.shape
    Hkv = k.shape[1]
    assert Hq % Hkv == 0 and k.shape[-1] == D and v.shape[-2] == k.shape[-2]
    G = Hq // Hkv
    scale = D ** -0.5 if scale is None else scale
    qg = q.float().unflatten(1, (Hkv, G))  # [B, Hkv, G, Sq, D]
    s = torch.einsum("bhgqd,bhkd->bhgqk", qg, k.float()) * scale  # [B, Hkv, G, Sq, Sk]
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    if bias is not None:
        s = s + _grouped(bias.float(), Hkv, G)
    p = masked_softmax(s, _grouped(mask, Hkv, G))
    o = torch.einsum("bhgqk,bhkd->bhgqd", p, v.float())  # [B, Hkv, G, Sq, Dv]
    return o.flatten(1, 2)


def attention_by_query_chunks(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    q_chunk: int,
    kv_range: Callable[[int, int], tuple[int, int]] | None = None,
    mask_fn: PairFn | None = None,
    bias_fn: PairFn | None = None,
    softcap: float | None = None,
    scale: float | None = None,
) -> Tensor:
    """:func:`attention` over query chunks, so scores never exceed ``[B, Hq, q_chunk, Sk]``.

    ``kv_range(q0, q1) -> (k0, k1)`` restricts the keys a chunk can see (all of them by
    default); ``mask_fn``/``bias_fn`` get absolute query/key positions i: [Cq, 1], j: [1, Ck].
    """
    Sq, Sk = q.shape[2], k.shape[2]
    outs = []
    for q0 in range(0, Sq, q_chunk):
        q1 = min(q0 + q_chunk, Sq)
        k0, k1 = kv_range(q0, q1) if kv_range else (0, Sk)
        i = torch.arange(q0, q1, device=q.device)[:, None]
        j = torch.arange(k0, k1, device=q.device)[None, :]
        outs.append(attention(
            q[:, :, q0:q1], k[:, :, k0:k1], v[:, :, k0:k1], scale=scale, softcap=softcap,
            mask=mask_fn(i, j) if mask_fn else None, bias=bias_fn(i, j) if bias_fn else None,
        ))
    return torch.cat(outs, dim=2)


# ---------------------------------------------------------------------------------------
# Decode
# ---------------------------------------------------------------------------------------
def paged_gqa_decode(
    q: Tensor, k_cache: Tensor, v_cache: Tensor, block_table: Tensor, seq_lens: Tensor
) -> Tensor:
    """One decode step over a paged KV cache (vLLM / FlashAttention ``block_table`` layout).

    q: [B, Hq, D]; k_cache, v_cache: [num_blocks, page_size, Hkv, D];
    block_table: [B, max_blocks] int32, page ``n`` of sequence ``b`` is ``block_table[b, n]``;
    seq_lens: [B] int32, token ``t`` of sequence ``b`` lives at
    ``cache[block_table[b, t // page_size], t % page_size]``; tokens ``t >= seq_lens[b]`` are
    not attended (a sequence of length 0 outputs 0). Returns [B, Hq, D] fp32.
    """
    B, max_blocks = block_table.shape
    _, page, Hkv, D = k_cache.shape
    assert q.shape[0] == B and q.shape[-1] == D and seq_lens.shape == (B,)
    assert int(seq_lens.max()) <= max_blocks * page
    k = k_cache[block_table.long()].flatten(1, 2)  # [B, max_blocks * page, Hkv, D]
    v = v_cache[block_table.long()].flatten(1, 2)
    pos = torch.arange(k.shape[1], device=q.device)
    mask = pos[None, :] < seq_lens[:, None].long()  # [B, L]
    o = attention(q[:, :, None, :], k.transpose(1, 2), v.transpose(1, 2),
                  mask=mask[:, None, None, :])  # [B, Hq, 1, D]
    return o[:, :, 0]


def shared_prefix_decode(
    q: Tensor, k_prefix: Tensor, v_prefix: Tensor, k_suffix: Tensor, v_suffix: Tensor
) -> Tensor:
    """Decode where every sequence starts with one shared prefix (cascade / Hydragen).

    q: [B, Hq, D]; k_prefix, v_prefix: [Hkv, P, D] (one copy for the batch);
    k_suffix, v_suffix: [B, Hkv, S, D]. Equals full attention of each query over
    ``concat(prefix, suffix_b)`` along the sequence; the concatenation is never built here.
    Returns [B, Hq, D] fp32.
    """
    B, Hq, D = q.shape
    Hkv, P, _ = k_prefix.shape
    assert k_suffix.shape[:2] == (B, Hkv) and Hq % Hkv == 0
    qg = q.float().unflatten(1, (Hkv, Hq // Hkv)) * D ** -0.5  # [B, Hkv, G, D]
    s_pre = torch.einsum("bhgd,hpd->bhgp", qg, k_prefix.float())  # [B, Hkv, G, P]
    s_suf = torch.einsum("bhgd,bhsd->bhgs", qg, k_suffix.float())  # [B, Hkv, G, S]
    p = torch.softmax(torch.cat([s_pre, s_suf], dim=-1), dim=-1)  # one softmax over P + S keys
    o = torch.einsum("bhgp,hpd->bhgd", p[..., :P], v_prefix.float())
    o = o + torch.einsum("bhgs,bhsd->bhgd", p[..., P:], v_suffix.float())
    return o.flatten(1, 2)


# ---------------------------------------------------------------------------------------
# Prefill variants
# ---------------------------------------------------------------------------------------
def softcap_sliding_window(
    q: Tensor, k: Tensor, v: Tensor, window: int, softcap: float, q_chunk: int = 1024
) -> Tensor:
    """Gemma-2 local layer: causal, query ``i`` sees keys ``i - window < j <= i``, logits
    ``softcap * tanh(q.k * scale / softcap)``. q: [B, Hq, S, D]; k, v: [B, Hkv, S, D]."""
    assert window >= 1 and softcap > 0
    return attention_by_query_chunks(
        q, k, v, q_chunk=q_chunk, softcap=softcap,
        kv_range=lambda q0, q1: (max(0, q0 - window + 1), q1),
        mask_fn=lambda i, j: (j <= i) & (j > i - window),
    )


def alibi_slopes(n_heads: int) -> Tensor:
    """ALiBi slopes (Press et al.): ``2 ** (-8 (h + 1) / n)`` for a power-of-two head count,
    else the power-of-two recipe interleaved as in BLOOM. Returns [n_heads] fp32."""
    def pow2(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (h + 1) for h in range(n)]

    if math.log2(n_heads).is_integer():
        s = pow2(n_heads)
    else:
        c = 2 ** math.floor(math.log2(n_heads))
        s = pow2(c) + pow2(2 * c)[0::2][: n_heads - c]
    return torch.tensor(s, dtype=torch.float32)


def alibi_causal(q: Tensor, k: Tensor, v: Tensor, slopes: Tensor, q_chunk: int = 1024) -> Tensor:
    """Causal attention with ALiBi: logits ``q.k * scale - slopes[h] * (i - j)`` for j <= i.
    q: [B, Hq, S, D]; k, v: [B, Hkv, S, D]; slopes: [Hq]."""
    assert slopes.shape == (q.shape[1],)
    sl = slopes.float()[:, None, None]  # [Hq, 1, 1]
    return attention_by_query_chunks(
        q, k, v, q_chunk=q_chunk, kv_range=lambda q0, q1: (0, q1),
        mask_fn=lambda i, j: j <= i, bias_fn=lambda i, j: -sl * (i - j).float(),
    )


def varlen_causal(
    q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, q_chunk: int = 512
) -> Tensor:
    """Packed documents (FlashAttention varlen layout), causal inside each document.

    q: [T, Hq, D]; k, v: [T, Hkv, D]; cu_seqlens: [N + 1] int32, 0 = c_0 <= ... <= c_N = T;
    token ``i`` of document ``n`` (c_n <= i < c_{n+1}) sees keys ``c_n <= j <= i``.
    Returns [T, Hq, D] fp32.
    """
    T = q.shape[0]
    cu = cu_seqlens.long()
    assert cu[0] == 0 and cu[-1] == T and bool((cu[1:] >= cu[:-1]).all())
    pos = torch.arange(T, device=q.device)
    doc = torch.searchsorted(cu, pos, right=True) - 1  # [T] document of each token
    start = cu[doc]  # [T] first token of that document
    o = attention_by_query_chunks(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
        q_chunk=q_chunk, kv_range=lambda q0, q1: (int(start[q0]), q1),
        mask_fn=lambda i, j: (j <= i) & (doc[j] == doc[i]),
    )  # [1, Hq, T, D]
    return o[0].transpose(0, 1)


def block_sparse_causal(
    q: Tensor, k: Tensor, v: Tensor, block_mask: Tensor, block_size: int, q_chunk: int = 1024
) -> Tensor:
    """Causal attention restricted to selected (query block, key block) tiles.

    q: [B, Hq, S, D]; k, v: [B, Hkv, S, D]; block_mask: [B, Hq, nb, nb] bool with
    nb = ceil(S / block_size). Query ``i`` sees key ``j`` iff ``j <= i`` and
    ``block_mask[b, h, i // block_size, j // block_size]``; a row that sees nothing outputs 0.
    """
    S = q.shape[2]
    nb = -(-S // block_size)
    assert block_mask.shape == (q.shape[0], q.shape[1], nb, nb) and block_mask.dtype == torch.bool
    return attention_by_query_chunks(
        q, k, v, q_chunk=q_chunk, kv_range=lambda q0, q1: (0, q1),
        mask_fn=lambda i, j: (j <= i) & block_mask[:, :, i // block_size, j // block_size],
    )


# ---------------------------------------------------------------------------------------
# 2-D neighbourhood attention
# ---------------------------------------------------------------------------------------
def neighborhood_starts(n: int, kernel_size: int, device: torch.device | None = None) -> Tensor:
    """First key index of each query's window along an axis of length n (NATTEN, dilation 1):
    the window is centred on the query and shifted inwards at the borders, so it always holds
    ``kernel_size`` keys. Returns [n] int64."""
    assert kernel_size % 2 == 1 and n >= kernel_size
    return (torch.arange(n, device=device) - kernel_size // 2).clamp(0, n - kernel_size)


def neighborhood_attention_2d(
    q: Tensor, k: Tensor, v: Tensor, kernel_size: int, q_chunk: int = 1024
) -> Tensor:
    """NATTEN-style 2-D neighbourhood attention, non-causal, no positional bias.

    q, k, v: [B, X, Y, heads, D] (heads-last). Query (x, y) sees the ``kernel_size**2`` keys
    (x', y') with x' in [sx(x), sx(x) + ks) and y' in [sy(y), sy(y) + ks), where
    s(n) = clamp(n - ks // 2, 0, N - ks) (:func:`neighborhood_starts`).
    Returns [B, X, Y, heads, D] fp32. Computed as dense attention under that mask.
    """
    B, X, Y, nh, D = q.shape
    sx = neighborhood_starts(X, kernel_size, q.device)
    sy = neighborhood_starts(Y, kernel_size, q.device)
    # flattened token t = x * Y + y
    tx = torch.arange(X * Y, device=q.device) // Y
    ty = torch.arange(X * Y, device=q.device) % Y

    def mask_fn(i: Tensor, j: Tensor) -> Tensor:
        in_x = (tx[j] >= sx[tx[i]]) & (tx[j] < sx[tx[i]] + kernel_size)
        in_y = (ty[j] >= sy[ty[i]]) & (ty[j] < sy[ty[i]] + kernel_size)
        return in_x & in_y

    def flat(t: Tensor) -> Tensor:
        return t.flatten(1, 2).transpose(1, 2)  # [B, heads, X*Y, D]

    o = attention_by_query_chunks(flat(q), flat(k), flat(v), q_chunk=q_chunk, mask_fn=mask_fn)
    return o.transpose(1, 2).unflatten(1, (X, Y))
