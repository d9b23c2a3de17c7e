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

Cost: the confirmation needs only the candidate's own event time and ``ncu``'s record of the
same call, so its verification skips the eager and ``torch.compile`` baselines (a fresh child
each, and the compile one pays inductor's compile: most of a first confirmation's time where
the baselines are not cached yet); ``baselines=True`` keeps them. :func:`limits_within` turns
one time budget into the verification's own per-phase limits (import, checks, timing, and
the same for the ``ncu`` child, whose start under Nsight Compute's injection gets at least
``sandbox.profile.NCU_IMPORT_S`` beyond it), so a stuck confirmation ends as a timeout of
that phase —
its processes killed by the sandbox, as any verification's — instead of holding up the next.

Example:
    >>> check(0.50, {"total_duration_ns": 480_000.0, "kernels": 2})["agrees"]
    True
    >>> check(0.10, {"total_duration_ns": 480_000.0, "kernels": 2})["agrees"]
    False
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

__all__ = ["TOLERANCE", "check", "confirm_timing", "limits_within"]

TOLERANCE = 0.25  # event time below (1 - this) x the kernels' summed duration: a disagreement
_LAUNCHES = 16  # sandbox.profile.ncu_command's --launch-count
# Shares of limits_within's budget: the candidate's child may use import + check + timing,
# the ncu child import + check (it is not timed), so 2 x 0.2 + 2 x 0.25 + 0.1 = the budget;
# the ncu child's import is raised to at least sandbox.profile.NCU_IMPORT_S beyond it.
# The check phase has the larger share: a shape's first trial compiles (and autotunes).
_IMPORT, _CHECK, _TIMING = 0.2, 0.25, 0.1


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


def limits_within(total_s: float, limits: Any = None) -> Any:
    """``limits`` (default :class:`sandbox.job.Limits`) with its import, check and timing
    limits cut so that a confirmation's two children together stay within about ``total_s``
    (the sandbox ends a child at a phase's limit: the verdict is then a timeout). Limits
    already lower are kept; the timing loop's own ceiling is held under the timing limit,
    and the compile allowance at half the check limit (a first trial's hang limit is twice
    the allowance, so it may still use the whole check phase)."""
    from sandbox.job import Limits

    lim = limits or Limits()
    timing_s = min(lim.timing_s, _TIMING * total_s)
    check_s = min(lim.check_s, _CHECK * total_s)
    return replace(lim, import_s=min(lim.import_s, _IMPORT * total_s), check_s=check_s,
                   timing_s=timing_s,
                   compile_allowance_s=min(lim.compile_allowance_s, check_s / 2),
                   timing=replace(lim.timing, limit_s=min(lim.timing.limit_s, timing_s / 2)))


class _WithoutBaselines:
    """A :class:`sandbox.baselines.Cache` that answers every baseline as one that could not
    be measured (``count == 0``: verify's documented "not re-attempted" record), so that the
    confirming verification measures none; device facts go to ``cache`` as usual."""

    def __init__(self, cache: Any) -> None:
        from sandbox.baselines import MemoryCache
        from sandbox.verdict import Timing

        self.cache = cache if cache is not None else MemoryCache()
        self._none = Timing(0.0, 0.0, 0.0, 0.0, 0, 0.0)

    def get_baseline(self, *key: Any) -> Any:
        from sandbox.baselines import _Rec

        return _Rec(timing=self._none, payload={"error": "not measured for a confirmation"})

    def put_baseline(self, *args: Any, **kw: Any) -> None:
        return None

    def get_device_facts(self, fingerprint_hash: str) -> Any:
        return self.cache.get_device_facts(fingerprint_hash)

    def put_device_facts(self, fingerprint_hash: str, fingerprint: dict[str, Any],
                         facts: dict[str, Any]) -> None:
        self.cache.put_device_facts(fingerprint_hash, fingerprint, facts)


def confirm_timing(spec: Any, source: str, *, device: str, cache: Any = None,
                   allow_libraries: tuple[str, ...] = (), limits: Any = None,
                   baselines: bool = False) -> dict[str, Any]:
    """One more verification of ``source`` on ``spec``'s main shape, timed and with its call
    measured under Nsight Compute; :func:`check` of the two (plus ``status``, ``wall_s`` and
    ``phases``: where the confirmation's time went, ``ncu`` the profiled child's own wall).
    Never raises for the candidate's faults: a verification that is not correct is not
    confirmed. The eager and ``torch.compile`` baselines are not measured unless
    ``baselines`` (the confirmation does not use them)."""
    from sandbox.job import Limits
    from sandbox.verifier import verify

    t0 = time.monotonic()
    declared = list(spec.shapes_for(device))
    main = spec.only(["main"] if "main" in declared else declared[:1])
    lim = replace(limits or Limits(), profile_ncu=True)
    v = verify(main, source, device=device, timing=True, limits=lim,
               cache=cache if baselines else _WithoutBaselines(cache),
               allow_libraries=allow_libraries)
    prof = v.profile or {}
    ncu = prof.get("ncu")
    spent = {"wall_s": round(time.monotonic() - t0, 3),
             "phases": {**{k: round(x, 3) for k, x in (v.phases or {}).items()},
                        **({"ncu": ncu["wall_s"]} if isinstance(ncu, dict)
                           and "wall_s" in ncu else {})}}
    if not v.passed:
        return {"agrees": None, "status": v.status.value, "events_ms": None, "ncu_ms": None,
                "ratio": None, "kernels": None, **spent,
                "reason": f"not confirmed: the confirming verification ended {v.status.value}: "
                          f"{(v.reason or '').splitlines()[0][:200] if v.reason else ''}"}
    shape = prof.get("shape")
    timed = [s for s in v.shapes if s.timing is not None and (shape is None or s.name == shape)]
    events_ms = float(timed[0].timing.median_ms) if timed else None
    return {**check(events_ms, ncu), "status": v.status.value, **spent}
