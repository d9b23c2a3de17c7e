"""Frozen records the store returns, and their conversion from ORM rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from kbench.store._tables import RunStatus, _Baseline, _LLMCall, _Run, _utc, _Verdict
from sandbox.verdict import Status, Timing, Verdict


@dataclass(frozen=True)
class RunRecord:
    id: int
    name: str
    created_at: datetime
    status: RunStatus
    config: dict[str, Any] | None
    model: str | None
    strategy: str | None
    notes: str | None


@dataclass(frozen=True)
class ProblemRecord:
    id: int
    key: str
    suite: str | None
    source_hash: str
    source: str


@dataclass(frozen=True)
class VerdictRecord:
    """One stored verdict; :meth:`verdict` rebuilds the full :class:`Verdict`."""

    id: int
    candidate_id: int
    status: Status
    reason: str
    passed: bool
    speedup_eager: float | None
    speedup_compile: float | None
    sol_pct: float | None
    payload: dict[str, Any]
    fingerprint_hash: str
    created_at: datetime

    def verdict(self) -> Verdict:
        return Verdict.from_dict(self.payload)


@dataclass(frozen=True)
class CandidateRecord:
    """One stored candidate with its latest verdict (``None`` if never verified)."""

    id: int
    run_id: int | None
    problem_id: int
    problem_key: str
    source: str
    backend: str
    origin: str
    parent_id: int | None
    attempt: int
    knobs: dict[str, Any] | None
    created_at: datetime
    verdict: VerdictRecord | None


@dataclass(frozen=True)
class BaselineRecord:
    id: int
    problem_key: str
    source_hash: str
    shape_name: str
    shape: dict[str, Any] | None
    mode: str
    fingerprint_hash: str
    fingerprint: dict[str, Any] | None
    median_ms: float
    iqr_ms: float
    count: int
    timing: Timing
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class DeviceFactsRecord:
    fingerprint_hash: str
    fingerprint: dict[str, Any]
    facts: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class LLMCallRecord:
    id: int
    run_id: int
    problem_id: int | None
    candidate_id: int | None
    provider: str
    model: str
    prompt: list[dict[str, Any]]
    response: str
    usage: dict[str, Any] | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    latency_s: float | None
    error: str | None
    created_at: datetime


class ResultRow(NamedTuple):
    """A problem attempted in a run and its best verdict's payload (``None``: no verdict).

    A pair, so ``dict(store.results(run_id))`` is what :mod:`kbench.scoring` takes.
    """

    problem_key: str
    verdict: dict[str, Any] | None


def _run_rec(r: _Run) -> RunRecord:
    return RunRecord(r.id, r.name, _utc(r.created_at), RunStatus(r.status), r.config,
                     r.model, r.strategy, r.notes)


def _verdict_rec(v: _Verdict) -> VerdictRecord:
    return VerdictRecord(v.id, v.candidate_id, Status(v.status), v.reason, v.passed,
                         v.speedup_eager, v.speedup_compile, v.sol_pct, v.payload,
                         v.fingerprint_hash, _utc(v.created_at))


def _baseline_rec(b: _Baseline) -> BaselineRecord:
    return BaselineRecord(b.id, b.problem_key, b.source_hash, b.shape_name, b.shape, b.mode,
                          b.fingerprint_hash, b.fingerprint, b.median_ms, b.iqr_ms, b.count,
                          Timing.from_dict(b.payload["timing"]), b.payload, _utc(b.created_at))


def _llm_rec(c: _LLMCall) -> LLMCallRecord:
    return LLMCallRecord(c.id, c.run_id, c.problem_id, c.candidate_id, c.provider, c.model,
                         c.prompt, c.response, c.usage, c.input_tokens, c.output_tokens,
                         c.cost_usd, c.latency_s, c.error, _utc(c.created_at))


# -- Opening ---------------------------------------------------------------------------


