"""Mixture-of-experts routing and expert computation in plain PyTorch.

Routing is a selection, so it is defined exactly: softmax scores in float32, the k largest
chosen with ties broken by the lowest expert index (a stable descending sort; ``torch.topk``
promises no order among equal values), then optionally renormalized over the chosen k.
:func:`check_topk_routing` accepts any selection whose scores are as good as the reference's,
so a kernel that breaks an exact tie the other way still passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reference_ops.checks import tensor_reason
from reference_ops.llama import swiglu

__all__ = ["topk_lowest_index", "softmax_topk", "check_topk_routing", "moe_swiglu"]


def topk_lowest_index(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest of the last dim, descending; equal values in increasing index order."""
    vals, idx = torch.sort(scores, dim=-1, descending=True, stable=True)
    return vals[..., :k], idx[..., :k]


def softmax_topk(
    logits: torch.Tensor, k: int, renormalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits: [T, E] -> (weights [T, k] float32, expert ids [T, k] int32), best first."""
    scores = torch.softmax(logits.float(), dim=-1)  # [T, E] float32
    vals, idx = topk_lowest_index(scores, k)
    if renormalize:
        vals = vals / vals.sum(dim=-1, keepdim=True)
    return vals, idx.to(torch.int32)


def _first_bad(mask: torch.Tensor) -> int:
    return int(mask.flatten().nonzero()[0]) // mask.shape[-1]


def check_topk_routing(
    out: object,
    ref: tuple[torch.Tensor, torch.Tensor],
    inputs: list,
    atol: float = 1e-6,
    rtol: float = 1e-4,
    renormalize: bool = True,
) -> str | None:
    """Accept any (weights, ids) whose chosen experts score as high as the reference's.

    ids must be k distinct experts per row; the chosen softmax scores (recomputed from
    ``inputs[0]``, the router logits), sorted, must match the reference's top-k scores; each
    weight must be its own expert's score (renormalized over the chosen k when asked).
    Order within a row is free. Returns None or the reason.
    """
    rw, rids = ref
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return f"expected a tuple (weights, ids), got {type(out).__name__}"
    w, ids = out
    bad = tensor_reason(w, rw, "weights") or tensor_reason(ids, rids, "ids")
    if bad:
        return bad
    scores = torch.softmax(inputs[0].float(), dim=-1)  # [T, E]
    n_exp = scores.shape[-1]
    ids64 = ids.long()
    if bool(((ids64 < 0) | (ids64 >= n_exp)).any()):
        return f"expert ids outside [0, {n_exp})"
    srt = ids64.sort(dim=-1).values
    dup = srt[..., 1:] == srt[..., :-1]
    if bool(dup.any()):
        return f"row {_first_bad(dup)} chooses an expert twice"
    chosen = scores.gather(-1, ids64)  # [T, k]
    best = scores.gather(-1, rids.long())
    got_s = chosen.sort(dim=-1, descending=True).values
    want_s = best.sort(dim=-1, descending=True).values
    worse = (got_s - want_s).abs() > atol + rtol * want_s
    if bool(worse.any()):
        r = _first_bad(worse)
        return (f"{int(worse.any(-1).sum())} rows choose experts outside the top-k (first row {r}: "
                f"chosen scores {got_s[r].tolist()}, top-k scores {want_s[r].tolist()})")
    expect = chosen / chosen.sum(dim=-1, keepdim=True) if renormalize else chosen
    if not bool(torch.isfinite(w).all()):
        return "weights contain NaN/Inf"
    off = (w.float() - expect).abs() > atol + rtol * expect
    if bool(off.any()):
        r = _first_bad(off)
        return (f"{int(off.sum())} weights do not match their experts' scores (first row {r}: "
                f"got {w[r].tolist()}, expected {expect[r].tolist()})")
    return None


def moe_swiglu(
    x: torch.Tensor,
    router_logits: torch.Tensor,
    w_gate: torch.Tensor,
    w_up: torch.Tensor,
    w_down: torch.Tensor,
    top_k: int,
) -> torch.Tensor:
    """A sparse MoE layer (vLLM FusedMoE semantics): softmax top-k routing (renormalized) over
    SwiGLU experts; the router logits come from a separate gate GEMM.

    x: [T, H]; router_logits: [T, E]; w_gate, w_up: [E, I, H]; w_down: [E, H, I] -> [T, H].
    Each token's output is sum_j weight_j * expert_{id_j}(x), summed in float32 in slot order
    (best expert first) and rounded to x's dtype once.
    """
    t, h = x.shape
    weights, ids = softmax_topk(router_logits, top_k, renormalize=True)  # [T, k]
    ys = x.new_zeros(t, top_k, h)  # ys: [T, k, H], one expert output per (token, slot)
    for e in range(w_gate.shape[0]):
        tok, slot = (ids == e).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        xe = x[tok]  # [n_e, H]
        ys[tok, slot] = F.linear(swiglu(F.linear(xe, w_gate[e]), F.linear(xe, w_up[e])), w_down[e])
    return (ys.float() * weights[..., None]).sum(dim=1).to(x.dtype)
