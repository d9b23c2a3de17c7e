"""Noise-aware winner selection (issue 10): re-time a problem's finalists interleaved and
declare a winner only when it beats the runner-up by more than the measured spread.

During a run a problem's best candidate is *provisional*: each candidate was timed once, in
its own verification, at its own moment on the GPU (clocks, temperature and neighbours
differ), so two candidates 3 % apart may simply have been timed at different moments.
Before a winner is declared:

1. :func:`finalists` takes the ``k`` best correct, timed candidates by eager speedup.
2. :func:`retime` times them again *interleaved* — round 1: A B C, round 2: A B C, ... —
   each time with a full verification (correctness re-checked on every shape) under
   :data:`RETIME_LIMITS`, which asks for more samples than a normal verification. Drift on
   the machine then hits every candidate alike. The datum of one candidate in one round is
   the median time (ms) of the problem's main shape (``main``, else the first timed shape).
3. :func:`choose` applies the rule below.

The rule, exactly. For each candidate ``c`` that finished every round, ``M_c`` is the median
of its per-round medians and ``S_c`` their interquartile range (``statistics.quantiles(n=4)``,
as :mod:`sandbox.timing` computes IQRs; 0 for one round). ``f`` is the candidate with the
smallest ``M``. A candidate ``c`` is *within spread* of ``f`` when
``M_c - M_f <= max(S_f, S_c)``. If ``f`` is the only one within its own spread, ``f`` wins:
it beats the runner-up ``u`` (the next smallest ``M``) by the margin ``M_u - M_f``, which is
more than ``max(S_f, S_u)``. Otherwise the timings cannot tell the tied candidates apart and
the *simplest* of them stands — the shortest source after
:func:`agents.strategies.normalise_source` (comments, docstrings, formatting dropped) — and,
among equally long ones, the *earliest* (its place in ``order``). The margin reported is
always ``M_u - M_f`` and the spread ``max(S_f, S_u)``, so a reader sees how close it was.

Example:
    >>> times = {1: [1.00, 1.01, 0.99], 2: [0.50, 0.51, 0.50]}
    >>> choose(times, [1, 2]).winner
    2
    >>> choose({1: [1.00, 1.05, 0.95], 2: [0.99, 1.04, 0.96]}, [1, 2]).decision
    'within_spread'
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sandbox.job import Limits
from sandbox.timing import TimingConfig

log = logging.getLogger("kbench.selection")

__all__ = ["RETIME_LIMITS", "Measure", "RetimeError", "Selection", "choose", "finalists",
           "main_shape", "retime", "select", "verify_measure"]

Id = TypeVar("Id", bound=Hashable)
#: ``measure(candidate_id, round) -> median ms`` of the main shape; raises RetimeError.
Measure = Callable[[Any, int], float]

#: More samples than a normal verification (30 samples / 100 ms of sampling / 1.5 s budget)
#: and a tighter target error: the finalists' differences are small by construction.
RETIME_LIMITS = Limits(timing=TimingConfig(min_reps=100, min_wall_ms=300.0, budget_s=4.0,
                                           target_rse=0.002))


class RetimeError(Exception):
    """A finalist's re-verification did not give a timing (it failed, or was untimed)."""


def _speedup(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, Mapping):
        ok = v.get("status") == "correct"
        s = v.get("speedup_eager")
    else:
        ok, s = v.passed, v.speedup_eager
    return float(s) if ok and s is not None and s == s and s > 0 else None


def finalists(verdicts: Mapping[Id, Any] | Iterable[tuple[Id, Any]], k: int = 3) -> list[Id]:
    """The ids of the ``k`` best correct, timed candidates, fastest (highest eager speedup)
    first; among equal speedups the earlier one (``verdicts`` is oldest first). Verdicts
    may be :class:`~sandbox.verdict.Verdict` objects, their payloads, or ``None``.

    Example:
        >>> finalists({1: {"status": "correct", "speedup_eager": 1.5},
        ...            2: {"status": "incorrect", "speedup_eager": 9.0},
        ...            3: {"status": "correct", "speedup_eager": 2.0},
        ...            4: {"status": "correct", "speedup_eager": None}})
        [3, 1]
    """
    items = list(verdicts.items() if isinstance(verdicts, Mapping) else verdicts)
    timed = [(i, cid, s) for i, (cid, v) in enumerate(items) if (s := _speedup(v)) is not None]
    timed.sort(key=lambda t: (-t[2], t[0]))
    return [cid for _, cid, _ in timed[:k]]


def main_shape(verdict: Any) -> str | None:
    """The shape whose time decides: ``main`` if it was timed, else the first timed one."""
    timed = [s.name for s in verdict.shapes if s.timing is not None]
    return "main" if "main" in timed else (timed[0] if timed else None)


def verify_measure(spec: Any, sources: Mapping[Any, str], *, device: str, cache: Any = None,
                   limits: Limits = RETIME_LIMITS,
                   allow_libraries: tuple[str, ...] = ()) -> Measure:
    """The real measurement: one verification with timing per call (:func:`sandbox.verify`
    under ``limits``) on the main shape only, giving its median ms."""
    from sandbox import verify

    # Every finalist was already checked on every shape: a re-timing checks and times the
    # main shape only (the timed outputs are still re-checked).
    declared = list(spec.shapes_for(device))
    timed = spec.only(["main"] if "main" in declared else declared[:1])

    def measure(cid: Any, rnd: int) -> float:
        v = verify(timed, sources[cid], device=device, cache=cache, timing=True, limits=limits,
                   allow_libraries=allow_libraries)
        if not v.passed:
            raise RetimeError(f"{v.status.value}: {(v.reason or '').splitlines()[0][:200]}")
        name = main_shape(v)
        if name is None:
            raise RetimeError(f"untimed: {v.reason or 'no timed shape'}")
        [shape] = [s for s in v.shapes if s.name == name]
        return float(shape.timing.median_ms)

    return measure


def retime(spec: Any, sources: Mapping[Id, str], *, device: str, rounds: int = 5,
           measure: Measure | None = None, cache: Any = None) -> dict[Id, list[float]]:
    """Time every candidate of ``sources`` once per round, interleaved (A B C A B C ...),
    in the order of ``sources``; returns each one's per-round main-shape medians (ms).

    ``measure(id, round)`` does one timing (default: :func:`verify_measure`, a full
    verification on ``device``). A candidate whose measurement raises :class:`RetimeError`
    is not timed again: its list stops short of ``rounds`` and :func:`choose` leaves it out.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    measure = measure or verify_measure(spec, sources, device=device, cache=cache)
    times: dict[Id, list[float]] = {cid: [] for cid in sources}
    live = list(sources)
    for rnd in range(rounds):
        for cid in list(live):
            try:
                times[cid].append(float(measure(cid, rnd)))
            except RetimeError as e:
                log.warning("%s: finalist %s dropped in round %d: %s",
                            getattr(spec, "key", spec), cid, rnd + 1, e)
                live.remove(cid)
    return times


@dataclass(frozen=True)
class Selection:
    """One problem's final selection.

    ``ranking``: candidates that finished every round, smallest median first.
    ``median_ms`` / ``iqr_ms``: the median and IQR of each one's per-round medians.
    ``margin_ms``: runner-up's median minus the fastest's; ``spread_ms``: the larger IQR of
    the two (``None`` with a single candidate). ``decision``: ``clear`` (the fastest beats
    the runner-up by more than the spread), ``within_spread`` (simplest, then earliest, of
    the tied ones kept), ``only`` (one candidate finished), ``none`` (none did).
    ``dropped``: candidates whose re-verification failed, with why.
    """

    winner: Any
    ranking: tuple[Any, ...]
    median_ms: dict[Any, float]
    iqr_ms: dict[Any, float]
    margin_ms: float | None
    spread_ms: float | None
    decision: str
    reason: str
    rounds: int = 0
    times: dict[Any, list[float]] = field(default_factory=dict)
    dropped: dict[Any, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (ids become strings in the mappings, as JSON keys must be)."""
        def keyed(d: Mapping[Any, Any]) -> dict[str, Any]:
            return {str(k): v for k, v in d.items()}

        return {"winner": self.winner, "ranking": list(self.ranking),
                "median_ms": keyed(self.median_ms), "iqr_ms": keyed(self.iqr_ms),
                "margin_ms": self.margin_ms, "spread_ms": self.spread_ms,
                "decision": self.decision, "reason": self.reason, "rounds": self.rounds,
                "times": keyed(self.times), "dropped": keyed(self.dropped)}


def _iqr(xs: Sequence[float]) -> float:
    if len(xs) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(xs, n=4)
    return q3 - q1


def _label(cid: Any) -> str:
    return f"#{cid}"


def choose(times: Mapping[Id, Sequence[float]], order: Sequence[Id],
           sources: Mapping[Id, str] | None = None) -> Selection:
    """The winner by the rule in this module's docstring.

    Args:
        times: Per-round medians (ms) of each candidate (:func:`retime`); a candidate with
            fewer rounds than the most any has did not finish and is left out.
        order: Candidate ids, earliest first (the last tie-break).
        sources: Their sources; the shortest normalised source breaks a tie first. Without
            it, ties go to the earliest.
    """
    full = max((len(v) for v in times.values()), default=0)
    done = [c for c in order if c in times and full and len(times[c]) == full]
    med = {c: statistics.median(times[c]) for c in done}
    iqr = {c: _iqr(times[c]) for c in done}
    place = {c: i for i, c in enumerate(order)}
    ranking = tuple(sorted(done, key=lambda c: (med[c], place[c])))
    common = dict(ranking=ranking, median_ms=med, iqr_ms=iqr, rounds=full,
                  times={c: list(times[c]) for c in times})
    if not ranking:
        return Selection(None, margin_ms=None, spread_ms=None, decision="none",
                         reason="no finalist finished re-timing", **common)
    f = ranking[0]
    if len(ranking) == 1:
        return Selection(f, margin_ms=None, spread_ms=None, decision="only",
                         reason=f"{_label(f)} is the only finalist that finished re-timing",
                         **common)
    u = ranking[1]
    margin, spread = med[u] - med[f], max(iqr[f], iqr[u])
    tied = [c for c in ranking if med[c] - med[f] <= max(iqr[f], iqr[c])]
    if tied == [f]:
        return Selection(f, margin_ms=margin, spread_ms=spread, decision="clear",
                         reason=f"{_label(f)} beats {_label(u)} by {margin:.4g} ms > spread "
                                f"{spread:.4g} ms ({full} interleaved rounds)", **common)
    size = {c: len(_normalise(sources[c])) for c in tied} if sources else {}
    w = min(tied, key=lambda c: (size.get(c, 0), place[c]))
    others = [c for c in tied if c != w]
    if size and any(size[c] > size[w] for c in others):
        why = (f"simpler kept ({size[w]} normalised chars vs "
               f"{', '.join(f'{_label(c)}: {size[c]}' for c in others)})")
    else:
        why = "earlier kept"
    return Selection(w, margin_ms=margin, spread_ms=spread, decision="within_spread",
                     reason=f"within spread: {_label(f)} is ahead of {_label(u)} by "
                            f"{margin:.4g} ms <= spread {spread:.4g} ms; "
                            f"{_label(w)} {why}", **common)


def _normalise(code: str) -> str:
    from agents.strategies import normalise_source

    return normalise_source(code)


def select(spec: Any, verdicts: Mapping[Id, Any], sources: Mapping[Id, str], *, device: str,
           k: int = 3, rounds: int = 5, measure: Measure | None = None,
           cache: Any = None) -> Selection | None:
    """The whole selection for one problem: :func:`finalists` of ``verdicts`` (oldest
    first), :func:`retime`, :func:`choose`. ``None`` when fewer than two are finalists."""
    ids = finalists(verdicts, k)
    if len(ids) < 2:
        return None
    inner = measure or verify_measure(spec, {c: sources[c] for c in ids}, device=device,
                                      cache=cache)
    dropped: dict[Id, str] = {}

    def noted(cid: Id, rnd: int) -> float:
        try:
            return inner(cid, rnd)
        except RetimeError as e:
            dropped[cid] = f"round {rnd + 1}: {e}"
            raise

    times = retime(spec, {c: sources[c] for c in ids}, device=device, rounds=rounds,
                   measure=noted)
    order = [c for c in verdicts if c in ids]  # earliest first
    got = choose(times, order, {c: sources[c] for c in ids})
    return replace(got, dropped=dict(dropped))
