"""Output comparison that returns reasons, not booleans.

Two tests must both hold for a floating-point output:
  * elementwise ``|out - ref| <= atol + rtol * |ref|`` (as ``torch.allclose``), and
  * relative L2 error ``||out - ref|| / ||ref|| <= max(rtol, 1e-6)``.
The second catches outputs that hide inside ``atol``: zeros against a softmax over 128k-wide
rows pass the first test but fail the second. NaN and Inf never pass, even where the
reference has them at the same place.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from reference_ops.checks import tensor_reason

__all__ = ["Mismatch", "compare", "compare_outputs", "check_output_type"]


@dataclass(frozen=True)
class Mismatch:
    """Why an output failed, with the numbers a kernel engineer needs to find the bug."""

    reason: str
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    rel_l2_err: float | None = None


@dataclass(frozen=True)
class Errors:
    max_abs_err: float
    max_rel_err: float
    rel_l2_err: float


def _idx(flat_index: int, shape: torch.Size) -> list[int]:
    out = []
    for dim in reversed(shape):
        out.append(flat_index % dim)
        flat_index //= dim
    return list(reversed(out))


def check_output_type(out: Any, ref: torch.Tensor) -> str | None:
    """Reason if ``out`` is not a plain tensor of ``ref``'s shape, dtype and device type
    (:func:`reference_ops.checks.tensor_reason`, which problems' own checks use too)."""
    return tensor_reason(out, ref, "output")


def compare(
    out: Any,
    ref: torch.Tensor,
    atol: float,
    rtol: float,
) -> tuple[Mismatch | None, Errors | None]:
    """Compare one output tensor with its reference. Returns (mismatch or None, errors)."""
    bad = check_output_type(out, ref)
    if bad:
        return Mismatch(bad), None
    if ref.numel() == 0:
        return None, Errors(0.0, 0.0, 0.0)
    if not (ref.is_floating_point() or ref.is_complex()):
        diff = out != ref
        n = int(diff.sum())
        if n:
            i = int(diff.flatten().nonzero()[0])
            where = _idx(i, ref.shape)
            return Mismatch(
                f"{n} of {ref.numel()} elements differ (first at {where}: "
                f"got {out.flatten()[i].item()}, expected {ref.flatten()[i].item()})"
            ), None
        return None, Errors(0.0, 0.0, 0.0)

    return _compare_floats(out.detach().reshape(-1), ref.detach().reshape(-1), ref.shape,
                           atol, rtol)


# Elements compared at once: the float64 temporaries of one chunk stay near 128 MiB each, so
# that checking a 7.5 GiB output (KernelBench's full-size norms) needs no 60 GiB of copies
# beside the child's own memory on the device.
_CHUNK = 1 << 24


def _chunk_stats(o: torch.Tensor, r: torch.Tensor, atol: float, rtol: float) -> list[float]:
    """One chunk's statistics, read back from the device in one transfer: NaN/Inf in the
    output, whether the reference has any, max |o - r| and where, max relative error, the
    sums of squares of the difference and of the reference, and the elements outside
    ``atol + rtol * |r|``. ``o`` is a float64 copy this function may overwrite; ``r`` is
    only read. (The previous form made about twelve passes and seven host syncs per chunk:
    0.39 s of softmax's 1.1 s of checks on an H100.)"""
    n_nonfinite = (~torch.isfinite(o)).sum()
    ref_nonfinite = (~torch.isfinite(r)).any()
    d = o.sub_(r).abs_()  # the difference, in o's memory
    m, i = d.max(dim=0)
    rabs = r.abs()
    rel = torch.div(d, rabs.clamp_min(1e-12)).max()
    sq_diff, sq_ref = torch.dot(d, d), torch.dot(r, r)
    n_bad = (d > rabs.mul_(rtol).add_(atol)).sum()  # the bound, in rabs's memory
    return torch.stack([n_nonfinite.to(torch.float64), ref_nonfinite.to(torch.float64), m,
                        i.to(torch.float64), rel, sq_diff, sq_ref,
                        n_bad.to(torch.float64)]).tolist()


def _compare_floats(o_flat: torch.Tensor, r_flat: torch.Tensor, shape: torch.Size, atol: float,
                    rtol: float) -> tuple[Mismatch | None, Errors | None]:
    """:func:`compare` for floating-point tensors, in float64, chunk by chunk."""
    numel = r_flat.numel()
    n_nonfinite, first_nonfinite, ref_nonfinite = 0, -1, False
    n_bad, max_abs, arg_abs, max_rel, sq_diff, sq_ref = 0, -1.0, 0, 0.0, 0.0, 0.0
    for s in range(0, numel, _CHUNK):
        o = o_flat[s:s + _CHUNK].to(torch.float64, copy=True)  # overwritten below
        r = r_flat[s:s + _CHUNK].to(torch.float64)
        k, r_bad, m, i, rel, sd, sr, nb = _chunk_stats(o, r, atol, rtol)
        del o, r
        if k:
            if first_nonfinite < 0:
                first_nonfinite = s + int((~torch.isfinite(o_flat[s:s + _CHUNK])).nonzero()[0])
            n_nonfinite += int(k)
            continue
        if n_nonfinite or ref_nonfinite:
            continue
        if r_bad:
            ref_nonfinite = True
            continue
        if m > max_abs:
            max_abs, arg_abs = m, s + int(i)
        max_rel = max(max_rel, rel)
        sq_diff += sd
        sq_ref += sr
        n_bad += int(nb)
    if n_nonfinite:
        return Mismatch(
            f"{n_nonfinite} of {numel} output elements are NaN/Inf (first at "
            f"{_idx(first_nonfinite, shape)}: {o_flat[first_nonfinite].item()}, expected "
            f"{r_flat[first_nonfinite].item()})"
        ), None
    if ref_nonfinite:
        # A reference with NaN/Inf is a problem-file bug; refuse rather than guess.
        return Mismatch("the reference output itself has NaN/Inf; fix the problem's inputs"), None
    ref_norm, diff_norm = math.sqrt(sq_ref), math.sqrt(sq_diff)
    rel_l2 = diff_norm / ref_norm if ref_norm > 0 else diff_norm
    errs = Errors(max_abs, max_rel, rel_l2)
    l2_bound = max(rtol, 1e-6)
    if n_bad == 0 and rel_l2 <= l2_bound:
        return None, errs
    where = _idx(arg_abs, shape)
    head = (
        f"{n_bad} of {numel} elements outside atol={atol:g} rtol={rtol:g}"
        if n_bad
        else f"relative L2 error {rel_l2:.3g} > {l2_bound:g} (elements pass atol, the whole does not)"
    )
    return Mismatch(
        f"{head}; max abs err {errs.max_abs_err:.4g} at {where} "
        f"(got {float(o_flat[arg_abs]):.6g}, expected {float(r_flat[arg_abs]):.6g}); "
        f"max rel err {errs.max_rel_err:.3g}; rel L2 err {rel_l2:.3g}",
        errs.max_abs_err, errs.max_rel_err, rel_l2,
    ), errs


def _takes_model(check: Callable[..., Any]) -> bool:
    """Whether a problem's check takes the reference model: a parameter named ``model``
    (given by keyword; a fourth positional one may be a tolerance, as top-k routing's
    ``atol``)."""
    try:
        return "model" in inspect.signature(check).parameters
    except (TypeError, ValueError):
        return False


def compare_outputs(
    out: Any,
    ref: Any,
    atol: float,
    rtol: float,
    check: Callable[..., str | None] | None = None,
    inputs: list[Any] | None = None,
    model: Any = None,
) -> tuple[Mismatch | None, Errors | None]:
    """Compare a candidate's output with the reference's: a tensor, or a tuple/list of them.

    A problem's own ``check(out, ref, inputs)`` replaces the numeric comparison (selections,
    top-k with ties); it returns ``None`` or a reason. A check with a parameter named
    ``model`` also gets the reference model of the case (its parameters and buffers: a
    quantized linear's bound on rounding differences needs the weights).
    """
    if check is not None:
        reason = (check(out, ref, inputs or [], model=model) if _takes_model(check)
                  else check(out, ref, inputs or []))
        return (Mismatch(reason) if reason else None), None
    if isinstance(ref, (tuple, list)):
        if not isinstance(out, (tuple, list)) or len(out) != len(ref):
            return Mismatch(f"expected a {type(ref).__name__} of {len(ref)} tensors, got {type(out).__name__}"), None
        worst: Errors | None = None
        for k, (o, r) in enumerate(zip(out, ref)):
            m, e = compare(o, r, atol, rtol)
            if m:
                return Mismatch(f"output[{k}]: {m.reason}", m.max_abs_err, m.max_rel_err, m.rel_l2_err), e
            if e and (worst is None or e.rel_l2_err > worst.rel_l2_err):
                worst = e
        return None, worst
    return compare(out, ref, atol, rtol)
