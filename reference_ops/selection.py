"""Selections (argmax, top-k) and the checks that accept any correct answer among ties.

Tie rule: scores are compared in fp32 and the canonical answer takes the lowest index first.
torch's own argmax follows it; torch.topk promises no order among equal values, so a top-k
check compares the selected *values* exactly and accepts any indices that point at them.
Each check has the problem-file signature ``check(out, ref, inputs) -> None | reason``.
"""

from __future__ import annotations

from typing import Any

import torch

from reference_ops.checks import tensor_reason

__all__ = ["argmax_last", "check_argmax_last", "topk_last", "check_topk_last"]

Tensor = torch.Tensor


def argmax_last(x: Tensor) -> Tensor:
    """Index of the largest value of each row (lowest index among ties)."""
    # x: [..., V] -> [...] int64
    return torch.argmax(x.float(), dim=-1)


def topk_last(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest values of each row, sorted descending, and their indices."""
    # x: [..., V] -> values [..., k] (x.dtype), indices [..., k] int64
    assert k <= x.shape[-1], (k, x.shape)
    return torch.topk(x, k, dim=-1, largest=True, sorted=True)


def _bad_indices(idx: Tensor, n: int, what: str) -> str | None:
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        return f"{what} out of range [0, {n}): min {int(idx.min())}, max {int(idx.max())}"
    return None


def check_argmax_last(out: Any, ref: Tensor, inputs: list[Any]) -> str | None:
    """Any index whose value equals the row maximum is accepted."""
    x = inputs[0]
    bad = tensor_reason(out, ref, "argmax output") or _bad_indices(out, x.shape[-1], "indices")
    if bad:
        return bad
    xf = x.float()
    got = xf.gather(-1, out.unsqueeze(-1)).squeeze(-1)
    best = xf.amax(dim=-1)
    wrong = got != best
    if bool(wrong.any()):
        i = int(wrong.flatten().nonzero()[0])
        return (f"{int(wrong.sum())} of {wrong.numel()} rows point at a non-maximal value "
                f"(first: row {i}, index {int(out.flatten()[i])} holds {float(got.flatten()[i])}, "
                f"the maximum is {float(best.flatten()[i])} at index {int(ref.flatten()[i])})")
    return None


def check_topk_last(out: Any, ref: tuple[Tensor, Tensor], inputs: list[Any]) -> str | None:
    """Values must equal the reference's exactly (sorted descending); indices must be distinct
    within a row and point at those values. Among ties any choice of indices is accepted."""
    x = inputs[0]
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return f"expected a tuple (values, indices), got {type(out).__qualname__}"
    vals, idx = out
    bad = (tensor_reason(vals, ref[0], "values") or tensor_reason(idx, ref[1], "indices")
           or _bad_indices(idx, x.shape[-1], "indices"))
    if bad:
        return bad
    wrong = vals != ref[0]
    if bool(wrong.any()):
        i = int(wrong.flatten().nonzero()[0])
        return (f"{int(wrong.sum())} of {wrong.numel()} top-k values differ (first at flat {i}: "
                f"got {float(vals.flatten()[i])}, expected {float(ref[0].flatten()[i])})")
    if bool((x.gather(-1, idx) != ref[0]).any()):
        return "some indices do not point at the top-k values they are returned with"
    srt = idx.sort(dim=-1).values
    if bool((srt[..., 1:] == srt[..., :-1]).any()):
        return "an index is selected twice within a row"
    return None
