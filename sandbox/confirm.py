"""Timing confirmed from outside the candidate's process (issue 12).

A verdict's time is measured with CUDA events inside the child, the process that also runs
the candidate's code: native code there could, in principle, alter what the child reports.
Before a candidate is named a problem's winner (``kbench run``'s final selection) its time is
therefore confirmed by a measurement the candidate cannot reach: one more verification whose
main-shape call runs under Nsight Compute (:func:`sandbox.profile.run_ncu`), where ``ncu``
— a separate process — records every kernel's device duration from the GPU's own counters
and writes them to a file the parent reads.

The rule is one-sided. Events time back-to-back calls including launch gaps, so an honest
per-call event time is at least about the sum of the call's kernel durations; an event time
well *below* that sum (less than ``1 - TOLERANCE`` of it) is a timing the kernels cannot
have produced, and the disagreement is shown (``agrees: False``). Being slower than the sum
is normal (launch overhead, small kernels) and is not a disagreement.

Limits, stated where the figures are shown: ``ncu`` profiles the first
``sandbox.profile.ncu_command`` launches of the call (16), so a call with more kernels is
confirmed only for those (the check can then only get weaker, never false); and its CSV is
written as the candidate's own user (a separate uid or container closes that, see the
Docker backend).

Example:
    >>> check(0.50, {"total_duration_ns": 480_000.0, "kernels": 2})["agrees"]
    True
    >>> check(0.10, {"total_duration_ns": 480_000.0, "kernels": 2})["agrees"]
    False
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

__all__ = ["TOLERANCE", "check", "confirm_timing"]

TOLERANCE = 0.25  # event time below (1 - this) x the kernels' summed duration: a disagreement
_LAUNCHES = 16  # sandbox.profile.ncu_command's --launch-count


def check(events_ms: float | None, ncu: dict[str, Any] | None,
          tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Hold a per-call event time (ms) against ``ncu``'s record of the same call.

    Returns ``{"agrees": True | False | None, "events_ms", "ncu_ms", "ratio", "kernels",
    "reason"}``; ``agrees`` is ``None`` when there is nothing to compare (no timing, ``ncu``
    unavailable or without a duration), with the reason saying why."""
    ncu = ncu or {}
    total = ncu.get("total_duration_ns")
    kernels = ncu.get("kernels")
    out: dict[str, Any] = {"agrees": None, "events_ms": events_ms, "ncu_ms": None,
                           "ratio": None, "kernels": kernels}
    if events_ms is None:
        return {**out, "reason": "not confirmed: the verification was not timed"}
    if ncu.get("error") or not total:
        why = ncu.get("error") or "ncu recorded no kernel duration"
        return {**out, "reason": f"not confirmed: {why}"}
    ncu_ms = float(total) / 1e6
    ratio = events_ms / ncu_ms
    part = (f" (the first {kernels} kernels of the call)" if kernels and kernels >= _LAUNCHES
            else "")
    out.update(ncu_ms=ncu_ms, ratio=ratio)
    if ratio >= 1 - tolerance:
        return {**out, "agrees": True,
                "reason": f"confirmed: {events_ms:.4g} ms per call by CUDA events, the call's "
                          f"kernels {ncu_ms:.4g} ms by Nsight Compute{part}"}
    return {**out, "agrees": False,
            "reason": f"timing NOT confirmed: CUDA events in the candidate's process say "
                      f"{events_ms:.4g} ms per call, but Nsight Compute measured its kernels at "
                      f"{ncu_ms:.4g} ms{part} — {1 / ratio:.2f}x longer than the reported time"}


def confirm_timing(spec: Any, source: str, *, device: str, cache: Any = None,
                   allow_libraries: tuple[str, ...] = (), limits: Any = None) -> dict[str, Any]:
    """One more verification of ``source`` on ``spec``'s main shape, timed and with its call
    measured under Nsight Compute; :func:`check` of the two (plus ``status``). Never raises
    for the candidate's faults: a verification that is not correct is not confirmed."""
    from sandbox.job import Limits
    from sandbox.verifier import verify

    declared = list(spec.shapes_for(device))
    main = spec.only(["main"] if "main" in declared else declared[:1])
    lim = replace(limits or Limits(), profile_ncu=True)
    v = verify(main, source, device=device, cache=cache, timing=True, limits=lim,
               allow_libraries=allow_libraries)
    if not v.passed:
        return {"agrees": None, "status": v.status.value, "events_ms": None, "ncu_ms": None,
                "ratio": None, "kernels": None,
                "reason": f"not confirmed: the confirming verification ended {v.status.value}: "
                          f"{(v.reason or '').splitlines()[0][:200] if v.reason else ''}"}
    prof = v.profile or {}
    shape = prof.get("shape")
    timed = [s for s in v.shapes if s.timing is not None and (shape is None or s.name == shape)]
    events_ms = float(timed[0].timing.median_ms) if timed else None
    return {**check(events_ms, prof.get("ncu")), "status": v.status.value}
