"""Baselines: eager and ``torch.compile`` timings measured by the candidate's protocol, and
the :class:`Cache` they (and device facts) persist in across verifications."""

from __future__ import annotations

from collections.abc import Callable
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


# Runs a baseline child in a directory for a mode on some cases: raw times per case, and
# the reason when it failed.
RunBaseline = Callable[[Path, str, list[_Case]], tuple[dict[str, RawTimes], str]]


def _baselines(spec: ProblemSpec, cases: list[_Case], work: Path, cache: Cache | None,
               fp: dict[str, Any], fph: str,
               run: RunBaseline) -> dict[tuple[str, str], Timing | None]:
    """Eager and ``torch.compile`` timings of every timed case: from ``cache`` when there,
    else measured (by ``run``, the verifier's child protocol) and stored, failures too."""
    out: dict[tuple[str, str], Timing | None] = {}
    timed = [c for c in cases if c.timed]
    for mode in ("eager", "compile"):
        missing = []
        for c in timed:
            hit = cache.get_baseline(spec.key, spec.source_hash, c.name, mode, fph) if cache else None
            if hit is not None:
                out[(c.name, mode)] = hit.timing if hit.timing.count > 0 else None
            else:
                missing.append(c)
        if not missing:
            continue
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
    return out

