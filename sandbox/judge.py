"""Judging: the child's outcome turned into per-shape results, a Status with its reason,
the timing figures of a correct verdict, and the ``--explain`` record of what ran."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from typing import Any

from sandbox.cases import _Case
from sandbox.errors import ProblemError
from sandbox.job import Limits
from sandbox.problem import ProblemSpec
from sandbox.roofline import roofline_ms
from sandbox.stats import geomean
from sandbox.timing import RawTimes, hidden_work, summarize
from sandbox.verdict import ShapeResult, Status, Timing, Verdict

__all__: list[str] = []  # internal to the verifier


def _trim(text: str, lines: int = 25) -> str:
    rows = [r for r in text.strip().splitlines() if r.strip()]
    return "\n".join(rows[-lines:])


def _compile_reason(message: str) -> str:
    """The first compiler error lines (nvcc/ninja/Triton), else the exception's tail."""
    rows = message.splitlines()
    errs = [r for r in rows if ("error" in r.lower() and not r.startswith(" ")
                                and "Traceback" not in r)]
    if errs:
        return "\n".join(dict.fromkeys(errs[:12]))
    return _trim(message, 15)


@dataclass
class _Outcome:
    status: Status | None = None
    reason: str = ""
    shape_fail: dict[str, str] = field(default_factory=dict)
    errs: dict[str, list[Any]] = field(default_factory=dict)
    passes: dict[str, int] = field(default_factory=dict)
    raw: dict[str, RawTimes] = field(default_factory=dict)
    log_tail: str = ""
    marks: dict[str, float] = field(default_factory=dict)
    excused: set[str] = field(default_factory=set)  # kernels of allowed libraries
    seen: dict[str, set[str]] = field(default_factory=dict)  # what the watched calls did
    profile: dict[str, Any] | None = None  # the main shape's kernel breakdown (GPU)
    precision: dict[str, dict[str, Any]] = field(default_factory=dict)  # settings seen, by point
    memcap: dict[str, Any] = field(default_factory=dict)  # the GPU-memory cap applied, checks
    # The run-time fault that ended the child, for grouping without parsing reasons: hang,
    # flood, exit (SystemExit or an exit code), signal, oom, exception, protocol.
    fault: str | None = None


def _headline(text: str) -> str:
    """The exception's own line (``ValueError: ...``) from a traceback's text."""
    rows = [r for r in text.strip().splitlines() if r.strip()]
    for r in reversed(rows):
        if r.startswith("Traceback ("):
            break  # a bare exception line (KeyboardInterrupt) follows it; see below
        if not r.startswith((" ", "\t")) and ("Error" in r or "Exception" in r or ":" in r):
            return r.strip()
    return rows[-1].strip() if rows else "unknown error"


def _error_status(msg: dict[str, Any]) -> tuple[Status, str]:
    kind, text = msg.get("kind"), str(msg.get("message", ""))
    phase = str(msg.get("phase", "")).replace(":", " ")
    if kind == "compile":
        return Status.COMPILE_ERROR, _compile_reason(text)
    if kind == "policy":
        return Status.REJECTED, text
    if kind == "unsupported":  # CPU: what Triton's interpreter cannot run (sandbox._interp)
        return Status.UNSUPPORTED, f"{text} (during {phase})"
    if kind == "harness":
        raise ProblemError(text)  # a problem-side fault, not the candidate's
    if kind == "oom":
        return Status.RUNTIME_ERROR, f"out of memory during {phase}: {_headline(text)}"
    return Status.RUNTIME_ERROR, (f"{_headline(text)} (during {phase})\n"
                                  f"last frames:\n{_trim(text, 12)}")


def _policy_explain(policy: Any, checked: bool) -> dict[str, Any]:
    return {"checked": checked, "backend": policy.backend,
            "violations": [f"[{v.rule}] line {v.line}: {v.message}" for v in policy.violations]}


def _explain(spec: ProblemSpec, policy: Any, static_policy: bool, cases: list[_Case],
             res: _Outcome) -> dict[str, Any]:
    """Which checks ran and what each saw (``kbench eval --explain``)."""
    atol, rtol = spec.tolerance
    return {
        "policy": _policy_explain(policy, static_policy),
        "mode": spec.meta.mode,
        "tolerance": {"atol": atol, "rtol": rtol,
                      "check": "custom check function" if spec.meta.check else
                      "elementwise atol + rtol * |ref|, and relative L2 <= rtol"},
        "cases": [{
            "name": c.name, "derived": c.derived, "timed": c.timed,
            "params": {k: v for k, v in c.params.items() if isinstance(v, (int, float))},
            "trials": [{"kind": k, "positive": c.positive.get(i, False),
                        "skipped": i in c.skipped, "profiled": i == c.profile_trial}
                       for i, k in enumerate(c.kinds)],
            "redrawn": list(c.redrawn), "not_handed_over": list(c.missing),
        } for c in cases],
        "ran": {k: sorted(v) for k, v in res.seen.items()},
        "first_failure": next(iter(res.shape_fail.values()), None) or (
            res.reason if res.status is not None else None),
    }


def _judge(cases: list[_Case], res: _Outcome) -> tuple[list[ShapeResult], Status, str]:
    shapes = []
    for c in cases:
        errs = res.errs.get(c.name, [])
        fail = res.shape_fail.get(c.name)
        shapes.append(ShapeResult(
            name=c.name, params=dict(c.params), derived=c.derived, trials=c.n_run,
            # a case never made (the child ended before asking for it) ran no trial: not passed
            passed=(fail is None and res.status is None and c.n_run > 0
                    and res.passes.get(c.name, 0) == c.n_run),
            reason=fail,
            max_abs_err=max((e.max_abs_err for e in errs), default=None),
            max_rel_err=max((e.max_rel_err for e in errs), default=None),
            rel_l2_err=max((e.rel_l2_err for e in errs), default=None),
        ))
    if res.status is not None:
        return shapes, res.status, res.reason
    if res.shape_fail:
        first = next(iter(res.shape_fail.values()))
        more = len(res.shape_fail) - 1
        return shapes, Status.INCORRECT, first + (f" (and {more} more shape(s) failed)" if more else "")
    if not all(s.passed for s in shapes):
        missing = [s.name for s in shapes if not s.passed]
        return shapes, Status.RUNTIME_ERROR, f"the candidate's process ended before shapes {missing} were checked"
    n = sum(s.trials for s in shapes)
    return shapes, Status.CORRECT, f"correct on {len(shapes)} shapes ({n} trials)"


def _marked(t: Timing | None, threshold: float) -> Timing | None:
    """``t`` with ``noisy`` decided by the current threshold (cached baselines included,
    whatever threshold they were stored under, or none)."""
    return replace(t, noisy=t.spread > threshold) if t is not None else None


def _timing_explain(t: Timing) -> dict[str, Any]:
    return {"median_ms": t.median_ms, "spread": t.spread, "samples": t.count,
            "calls_per_sample": t.calls_per_sample, "noisy": t.noisy,
            "launch_ms": t.launch_ms}


def _with_timing(verdict: Verdict, spec: ProblemSpec, res: _Outcome,
                 base: dict[tuple[str, str], Timing | None], facts: dict[str, Any],
                 limits: Limits) -> Verdict:
    """A correct verdict with its timings, speedups over the baselines ``base`` and SOL%
    against the device ``facts`` — or rejected for hidden work or an impossible time.

    A noisy timing (candidate or baseline, IQR over median above the configured threshold)
    keeps its speedups, and the verdict says so: ``noisy``, a note, its reason and
    ``explain["timing"]``."""
    cfg = limits.timing
    shapes = []
    sp_e, sp_c, sols = [], [], []
    noisy: list[str] = []
    seen: dict[str, Any] = {}
    for s in verdict.shapes:
        raw = res.raw.get(s.name)
        if raw is None:
            shapes.append(s)
            continue
        hidden = hidden_work(raw)
        if hidden:
            return replace(verdict, status=Status.REJECTED, reason=f"shape {s.name!r}: {hidden}")
        t = Timing.from_dict(summarize(raw, cfg.noisy_spread))
        eager = _marked(base.get((s.name, "eager")), cfg.noisy_spread)
        comp = _marked(base.get((s.name, "compile")), cfg.noisy_spread)
        sides = {"candidate": t, "eager": eager, "compile": comp}
        seen[s.name] = {k: _timing_explain(v) for k, v in sides.items() if v is not None}
        noisy += [f"{s.name!r} {k} (IQR {v.spread:.0%} of median)"
                  for k, v in sides.items() if v is not None and v.noisy]
        flops, nbytes = spec.roofline(s.params)
        roof = roofline_ms(flops, nbytes, spec.meta.dtype, facts)
        sol = 100.0 * roof / t.median_ms if roof else None
        if sol is not None and sol > limits.max_sol_pct:
            return replace(verdict, status=Status.REJECTED, reason=(
                f"shape {s.name!r}: impossible timing: {t.median_ms:.4f} ms is faster than the "
                f"roofline bound {roof:.4f} ms ({sol:.0f}% of speed of light)"))
        se = eager.median_ms / t.median_ms if eager else None
        sc = comp.median_ms / t.median_ms if comp else None
        shapes.append(replace(s, timing=t, eager=eager, compiled=comp, speedup_eager=se,
                              speedup_compile=sc, roofline_ms=roof, sol_pct=sol))
        if se:
            sp_e.append(se)
        if sc:
            sp_c.append(sc)
        if sol is not None:
            sols.append(sol)
    reason, notes = verdict.reason, verdict.notes
    if noisy:
        what = (f"noisy timing (IQR above {cfg.noisy_spread:.0%} of the median): "
                f"{', '.join(noisy)}; speedups are less certain")
        reason, notes = f"{reason}; {what}", (*notes, what)
    explain = verdict.explain
    if seen:
        rule = {k: getattr(cfg, k) for k in ("min_reps", "min_wall_ms", "min_measured_ms", "target_rse",
                                              "budget_s", "max_reps", "small_call_ms",
                                              "noisy_spread", "cover_launch")}
        explain = {**explain, "timing": {"rule": rule, "shapes": seen}}
    return replace(verdict, shapes=tuple(shapes), timing_available=bool(res.raw),
                   speedup_eager=geomean(sp_e), speedup_compile=geomean(sp_c),
                   sol_pct=statistics.fmean(sols) if sols else None,
                   reason=reason, notes=notes, noisy=bool(noisy), explain=explain)
