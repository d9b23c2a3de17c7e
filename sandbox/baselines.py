"""Baselines: eager and ``torch.compile`` timings measured by the candidate's protocol, and
the :class:`Cache` they (and device facts) persist in across verifications.

A baseline is keyed by problem, shape, mode and device fingerprint — which names the GPU
model, not its index — so every worker of a multi-GPU host shares one measurement per
(problem, device model). Within a process, workers that miss the same key at once wait for
the first one's measurement instead of measuring it again."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sandbox.cases import _Case
from sandbox.problem import ProblemSpec, Shape
from sandbox.timing import RawTimes, summarize
from sandbox.verdict import Timing

__all__ = ["Cache", "MemoryCache"]


class Cache(Protocol):
    """Where baselines and device facts persist; :class:`kbench.store.Store` implements it.

    A baseline that could not be measured (e.g. ``torch.compile`` fails on the problem) is
    kept as a ``Timing`` with ``count == 0`` and the reason in ``payload["error"]``, so that
    it is not re-attempted on every verification.
    """

    def get_baseline(self, problem_key: str, source_hash: str, shape_name: str, mode: str,
                     fingerprint_hash: str) -> Any | None: ...  # a record with .timing

    def put_baseline(self, problem_key: str, source_hash: str, shape_name: str, mode: str,
                     fingerprint_hash: str, timing: Timing, *, shape: Shape | None = None,
                     fingerprint: dict[str, Any] | None = None,
                     payload: dict[str, Any] | None = None) -> Any: ...

    def get_device_facts(self, fingerprint_hash: str) -> Any | None: ...  # a record with .facts

    def put_device_facts(self, fingerprint_hash: str, fingerprint: dict[str, Any],
                         facts: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class _Rec:
    timing: Timing | None = None
    facts: dict[str, Any] | None = None
    payload: dict[str, Any] | None = None


class MemoryCache:
    """A process-local :class:`Cache` (tests, one-off runs)."""

    def __init__(self) -> None:
        self.baselines: dict[tuple[str, ...], _Rec] = {}
        self.facts: dict[str, _Rec] = {}

    def get_baseline(self, problem_key: str, source_hash: str, shape_name: str, mode: str,
                     fingerprint_hash: str) -> _Rec | None:
        return self.baselines.get((problem_key, source_hash, shape_name, mode, fingerprint_hash))

    def put_baseline(self, problem_key: str, source_hash: str, shape_name: str, mode: str,
                     fingerprint_hash: str, timing: Timing, *, shape: Shape | None = None,
                     fingerprint: dict[str, Any] | None = None,
                     payload: dict[str, Any] | None = None) -> None:
        key = (problem_key, source_hash, shape_name, mode, fingerprint_hash)
        self.baselines[key] = _Rec(timing=timing, payload=payload)

    def get_device_facts(self, fingerprint_hash: str) -> _Rec | None:
        return self.facts.get(fingerprint_hash)

    def put_device_facts(self, fingerprint_hash: str, fingerprint: dict[str, Any],
                         facts: dict[str, Any]) -> None:
        self.facts[fingerprint_hash] = _Rec(facts=facts)


_FLIGHTS: dict[tuple[str, ...], list[Any]] = {}  # key -> [lock, holders and waiters]
_FLIGHTS_MU = threading.Lock()


@contextmanager
def _one_at_a_time(key: tuple[str, ...]) -> Iterator[None]:
    """Hold the process-wide lock of ``key`` (dropped when no thread needs it any more)."""
    with _FLIGHTS_MU:
        entry = _FLIGHTS.setdefault(key, [threading.Lock(), 0])
        entry[1] += 1
    try:
        with entry[0]:
            yield
    finally:
        with _FLIGHTS_MU:
            entry[1] -= 1
            if not entry[1]:
                del _FLIGHTS[key]


# Runs a baseline child in a directory for a mode on some cases: raw times per case, and
# the reason when it failed.
RunBaseline = Callable[[Path, str, list[_Case]], tuple[dict[str, RawTimes], str]]


def _baselines(spec: ProblemSpec, cases: list[_Case], work: Path, cache: Cache | None,
               fp: dict[str, Any], fph: str,
               run: RunBaseline) -> dict[tuple[str, str], Timing | None]:
    """Eager and ``torch.compile`` timings of every timed case: from ``cache`` when there,
    else measured (by ``run``, the verifier's child protocol) and stored, failures too.

    Called without a hold on the device: a thread waiting here for another's measurement of
    the same (problem, mode, fingerprint) holds nothing that measurement needs."""
    out: dict[tuple[str, str], Timing | None] = {}
    timed = [c for c in cases if c.timed]
    for mode in ("eager", "compile"):
        if cache is None:
            _measure(spec, timed, work, None, fp, fph, run, mode, out)
            continue
        with _one_at_a_time((spec.key, spec.source_hash, mode, fph)):
            _measure(spec, timed, work, cache, fp, fph, run, mode, out)
    return out


def _measure(spec: ProblemSpec, timed: list[_Case], work: Path, cache: Cache | None,
             fp: dict[str, Any], fph: str, run: RunBaseline, mode: str,
             out: dict[tuple[str, str], Timing | None]) -> None:
    """One mode of :func:`_baselines`: cached timings into ``out``, the rest measured and
    stored."""
    missing = []
    for c in timed:
        hit = cache.get_baseline(spec.key, spec.source_hash, c.name, mode, fph) if cache else None
        if hit is not None:
            out[(c.name, mode)] = hit.timing if hit.timing.count > 0 else None
        else:
            missing.append(c)
    if not missing:
        return
    sub = work / f"baseline_{mode}"
    sub.mkdir()
    raws, reason = run(sub, mode, missing)
    for c in missing:
        raw = raws.get(c.name)
        t = Timing.from_dict(summarize(raw)) if raw else None
        out[(c.name, mode)] = t
        if cache:
            failed = Timing(0.0, 0.0, 0.0, 0.0, 0, 0.0)
            cache.put_baseline(spec.key, spec.source_hash, c.name, mode, fph, t or failed,
                               shape=c.params, fingerprint=fp,
                               payload=None if t else {"error": reason or "no timing"})
