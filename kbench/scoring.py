"""Scores over verdicts: fast_p (KernelBench's metric), geomean speedup, SOL%.

Pure functions. Every function takes :class:`~sandbox.verdict.Verdict` objects or their
``to_dict()`` payloads (what :meth:`kbench.store.Store.results` returns), and ``results``
may be a mapping ``problem key -> best verdict or None`` or an iterable of such pairs, so
``fast_p(store.results(run_id), 1.0)`` works as it is.

Unmeasured is never faster: a correct verdict without timing (no GPU, timing unavailable)
counts as correct for fast_0 and never for fast_p with p > 0, and is left out of the
geometric mean rather than invented.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from sandbox.stats import geomean
from sandbox.verdict import Status, Verdict

__all__ = [
    "DEFAULT_PS",
    "Baseline",
    "VerdictLike",
    "Results",
    "fast_p",
    "geomean_speedup",
    "mean_sol",
    "best_verdict",
    "Summary",
    "summary",
]

Baseline = Literal["eager", "compile"]
VerdictLike = Verdict | Mapping[str, Any]
Results = Mapping[str, VerdictLike | None] | Iterable[tuple[str, VerdictLike | None]]
V = TypeVar("V", Verdict, Mapping[str, Any])

DEFAULT_PS: tuple[float, ...] = (0.0, 1.0, 1.5, 2.0)
_BASELINES = ("eager", "compile")


def _passed(v: VerdictLike) -> bool:
    if isinstance(v, Verdict):
        return v.passed
    if "status" in v:  # the status decides; a stored "passed" flag is only a copy of it
        return Status(v["status"]).passed
    return bool(v.get("passed", False))


def _get(v: VerdictLike, name: str) -> float | None:
    x = getattr(v, name) if isinstance(v, Verdict) else v.get(name)
    return None if x is None or not math.isfinite(x) else float(x)


def _speedup(v: VerdictLike, baseline: str) -> float | None:
    if baseline not in _BASELINES:
        raise ValueError(f"baseline must be 'eager' or 'compile', not {baseline!r}")
    return _get(v, f"speedup_{baseline}")


def _as_dict(results: Results) -> dict[str, VerdictLike | None]:
    return dict(results.items() if isinstance(results, Mapping) else results)


def fast_p(results: Results, p: float, baseline: Baseline = "eager", total: int | None = None) -> float:
    """KernelBench's fast_p: the share of attempted problems that are correct and faster
    than the baseline by a factor strictly greater than ``p``.

    ``fast_p = #{problems: correct and speedup > p} / #{problems attempted}``. The
    denominator counts every attempted problem, including those with no verdict (``None``)
    or only failed ones. fast_0 is the correctness rate: it counts correct verdicts whether
    or not they were timed; for p > 0 an untimed verdict never counts.

    Args:
        results: Problem key -> its best verdict, or ``None`` when attempted without one.
        p: The speedup threshold, ``>= 0``.
        baseline: Speedup over ``eager`` PyTorch or over ``compile`` (``torch.compile``).
        total: The number of problems attempted, when larger than ``len(results)``.

    Returns:
        A share in [0, 1]; 0.0 when nothing was attempted.

    Example:
        >>> from sandbox.verdict import Status, Verdict
        >>> ok = lambda s: Verdict("p", Status.CORRECT, "", "cpu", "triton", speedup_eager=s)
        >>> bad = Verdict("p", Status.INCORRECT, "mismatch", "cpu", "triton", speedup_eager=9.0)
        >>> res = {"a": ok(2.0), "b": ok(1.0), "c": ok(None), "d": bad, "e": None}
        >>> fast_p(res, 0)  # a, b, c correct out of 5
        0.6
        >>> fast_p(res, 1)  # only a: b is not strictly faster, c was not timed
        0.2
        >>> fast_p(res, 1, total=10)
        0.1
    """
    if p < 0:
        raise ValueError(f"p must be >= 0, not {p}")
    res = _as_dict(results)
    n = len(res) if total is None else total
    if n < len(res):
        raise ValueError(f"total={total} is less than the {len(res)} problems in results")
    if n == 0:
        return 0.0
    hits = 0
    for v in res.values():
        if v is None or not _passed(v):
            continue
        s = _speedup(v, baseline)
        if p == 0 or (s is not None and s > p):
            hits += 1
    return hits / n


def geomean_speedup(results: Results, baseline: Baseline = "eager") -> float | None:
    """Geometric mean speedup over the correct, timed verdicts; ``None`` if there are none.

    Example:
        >>> from sandbox.verdict import Status, Verdict
        >>> ok = lambda s: Verdict("p", Status.CORRECT, "", "cpu", "triton", speedup_eager=s)
        >>> geomean_speedup({"a": ok(2.0), "b": ok(0.5), "c": ok(None), "d": None})
        1.0
    """
    return geomean(_speedup(v, baseline) for v in _as_dict(results).values()
                   if v is not None and _passed(v))


def mean_sol(results: Results) -> float | None:
    """Arithmetic mean SOL% (share of the roofline bound reached) over correct verdicts that
    have one; ``None`` if there are none.

    Example:
        >>> from sandbox.verdict import Status, Verdict
        >>> ok = lambda sol: Verdict("p", Status.CORRECT, "", "cpu", "triton", sol_pct=sol)
        >>> mean_sol({"a": ok(40.0), "b": ok(60.0), "c": ok(None)})
        50.0
    """
    sols = [s for v in _as_dict(results).values()
            if v is not None and _passed(v) and (s := _get(v, "sol_pct")) is not None]
    return sum(sols) / len(sols) if sols else None


def best_verdict(verdicts: Sequence[V]) -> V | None:
    """The best of one problem's verdicts, given oldest first: correct ones first, then the
    highest eager speedup (an untimed one ranks below any timed one), then the latest.

    Example:
        >>> from sandbox.verdict import Status, Verdict
        >>> a = Verdict("p", Status.CORRECT, "", "cpu", "triton", speedup_eager=1.2)
        >>> b = Verdict("p", Status.CORRECT, "", "cpu", "triton", speedup_eager=3.0)
        >>> c = Verdict("p", Status.TIMEOUT, "slow", "cpu", "triton")
        >>> best_verdict([a, b, c]) is b
        True
        >>> best_verdict([c]) is c
        True
    """
    def rank(item: tuple[int, V]) -> tuple[bool, float, int]:
        i, v = item
        ok = _passed(v)
        s = _speedup(v, "eager") if ok else None
        return (ok, -math.inf if s is None else s, i)

    return max(enumerate(verdicts), key=rank)[1] if verdicts else None


@dataclass(frozen=True)
class Summary:
    """Scores of one run or suite. ``fast_eager[p]`` / ``fast_compile[p]`` are fast_p
    over the eager and ``torch.compile`` baselines for each p in :data:`DEFAULT_PS`.

    ``n_timed`` counts correct verdicts with an eager speedup: when it is 0, fast_p for
    p > 0 is 0 because nothing was timed (e.g. a CPU-only run), not because nothing was fast.
    """

    n_problems: int
    n_correct: int
    n_timed: int
    fast_eager: dict[float, float]
    fast_compile: dict[float, float]
    geomean_speedup_eager: float | None
    geomean_speedup_compile: float | None
    mean_sol_pct: float | None

    def fast(self, p: float, baseline: Baseline = "eager") -> float:
        """fast_p for one of the summarised thresholds."""
        return (self.fast_eager if baseline == "eager" else self.fast_compile)[float(p)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``fast_p`` keys are ``"fast_0"``, ``"fast_1.5"``, ..."""
        return {
            "n_problems": self.n_problems,
            "n_correct": self.n_correct,
            "n_timed": self.n_timed,
            "fast_p": {
                "eager": {f"fast_{p:g}": v for p, v in self.fast_eager.items()},
                "compile": {f"fast_{p:g}": v for p, v in self.fast_compile.items()},
            },
            "geomean_speedup_eager": self.geomean_speedup_eager,
            "geomean_speedup_compile": self.geomean_speedup_compile,
            "mean_sol_pct": self.mean_sol_pct,
        }


def summary(results: Results, total: int | None = None, ps: Sequence[float] = DEFAULT_PS) -> Summary:
    """All the scores of :class:`Summary` for one set of results.

    Example:
        >>> from sandbox.verdict import Status, Verdict
        >>> ok = Verdict("p", Status.CORRECT, "", "cpu", "triton", speedup_eager=2.0)
        >>> s = summary({"a": ok, "b": None})
        >>> (s.n_problems, s.n_correct, s.fast(0), s.fast(1.5), s.fast(1, "compile"))
        (2, 1, 0.5, 0.5, 0.0)
    """
    res = _as_dict(results)
    correct = [v for v in res.values() if v is not None and _passed(v)]
    return Summary(
        n_problems=len(res) if total is None else total,
        n_correct=len(correct),
        n_timed=sum(_speedup(v, "eager") is not None for v in correct),
        fast_eager={float(p): fast_p(res, p, "eager", total) for p in ps},
        fast_compile={float(p): fast_p(res, p, "compile", total) for p in ps},
        geomean_speedup_eager=geomean_speedup(res, "eager"),
        geomean_speedup_compile=geomean_speedup(res, "compile"),
        mean_sol_pct=mean_sol(res),
    )
