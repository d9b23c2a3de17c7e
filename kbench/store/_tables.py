"""Tables of the store (SQLAlchemy ORM), JSON columns and secret scrubbing."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

ENV_VAR = "KBENCH_STORE"
_POSTGRES_HINT = "pip install 'kbench[postgres]'"
_BUSY_TIMEOUT_MS = 30_000
_MODES = ("eager", "compile")
T = TypeVar("T")


class RunStatus(str, enum.Enum):
    """Lifecycle of a run. Compares equal to its string value."""

    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(t: datetime) -> datetime:
    # SQLite hands timestamps back naive; they were written in UTC.
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


# -- JSON columns ------------------------------------------------------------------------

_NONFINITE = "__float__"


_NUL, _NUL_STAND_IN = "\x00", "\ufffd"


def _no_nul(text: str) -> str:
    """``text`` with NUL characters as U+FFFD: PostgreSQL's text cannot hold NUL,
    and the store keeps one behaviour on every backend (a stray NUL in an LLM reply must not
    fail the write that records it)."""
    return text.replace(_NUL, _NUL_STAND_IN) if _NUL in text else text


def _to_json(x: Any) -> Any:
    """A JSON-safe copy: non-finite floats become ``{"__float__": "nan"}`` markers (strict
    JSON and PostgreSQL reject NaN), tuples become lists, enums their values, NUL
    characters U+FFFD (see :func:`_no_nul`)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else {_NONFINITE: repr(x)}
    if isinstance(x, str):
        return _no_nul(x)
    if x is None or isinstance(x, (bool, int)):
        return x
    if isinstance(x, enum.Enum):
        return _to_json(x.value)
    if isinstance(x, Mapping):
        return {_no_nul(str(k)): _to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_json(v) for v in x]
    return _no_nul(str(x))  # e.g. a torch.dtype in shape params: keep something readable


def _from_json(x: Any) -> Any:
    if isinstance(x, dict):
        if len(x) == 1 and _NONFINITE in x:
            return float(x[_NONFINITE])
        return {k: _from_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_from_json(v) for v in x]
    return x


class _JSON(TypeDecorator):
    """JSON that round-trips NaN and infinities. Plain JSON on PostgreSQL too, not JSONB:
    JSONB reorders keys (a run's config, a verdict's phases came back shortest key first),
    and nothing queries inside these columns."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else _to_json(value)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else _from_json(value)


class _Text(TypeDecorator):
    """Text without NUL characters (see :func:`_no_nul`)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return value if not isinstance(value, str) else _no_nul(value)


# -- Tables ----------------------------------------------------------------------------


class _Base(DeclarativeBase):
    pass


# Names a user or a path decides (run names, model labels, problem keys, shape names) are
# Text: PostgreSQL enforces VARCHAR lengths that SQLite ignores, and a run must not store on
# one backend and fail on the other. Short closed vocabularies and hashes keep String(n).


class _Run(_Base):
    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('running', 'finished', 'interrupted', 'failed')", name="run_status"
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(_Text, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING.value)
    config: Mapped[Any] = mapped_column(_JSON, nullable=True)
    model: Mapped[str | None] = mapped_column(_Text)
    strategy: Mapped[str | None] = mapped_column(_Text)
    notes: Mapped[str | None] = mapped_column(_Text)


class _Problem(_Base):
    __tablename__ = "problems"
    __table_args__ = (UniqueConstraint("key", "source_hash"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(_Text, index=True)
    suite: Mapped[str | None] = mapped_column(_Text)
    source_hash: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(_Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class _Candidate(_Base):
    __tablename__ = "candidates"
    __table_args__ = (Index("ix_candidates_run_problem", "run_id", "problem_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    problem_id: Mapped[int] = mapped_column(ForeignKey("problems.id"))
    source: Mapped[str] = mapped_column(_Text)
    backend: Mapped[str] = mapped_column(String(32))
    origin: Mapped[str] = mapped_column(String(32), default="eval")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    knobs: Mapped[Any] = mapped_column(_JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class _Verdict(_Base):
    __tablename__ = "verdicts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"), index=True)
    status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(_Text)
    passed: Mapped[bool]
    speedup_eager: Mapped[float | None] = mapped_column(Float)
    speedup_compile: Mapped[float | None] = mapped_column(Float)
    sol_pct: Mapped[float | None] = mapped_column(Float)
    payload: Mapped[Any] = mapped_column(_JSON)
    fingerprint_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class _Baseline(_Base):
    __tablename__ = "baselines"
    __table_args__ = (
        UniqueConstraint("problem_key", "source_hash", "shape_name", "mode", "fingerprint_hash"),
        CheckConstraint("mode IN ('eager', 'compile')", name="baseline_mode"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    problem_key: Mapped[str] = mapped_column(_Text)
    source_hash: Mapped[str] = mapped_column(String(128))
    shape_name: Mapped[str] = mapped_column(_Text)
    shape: Mapped[Any] = mapped_column(_JSON, nullable=True)
    mode: Mapped[str] = mapped_column(String(16))
    fingerprint_hash: Mapped[str] = mapped_column(String(128))
    fingerprint: Mapped[Any] = mapped_column(_JSON, nullable=True)
    median_ms: Mapped[float] = mapped_column(Float)
    iqr_ms: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer)
    payload: Mapped[Any] = mapped_column(_JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class _DeviceFacts(_Base):
    __tablename__ = "device_facts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint_hash: Mapped[str] = mapped_column(String(128), unique=True)
    fingerprint: Mapped[Any] = mapped_column(_JSON)
    facts: Mapped[Any] = mapped_column(_JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class _LLMCall(_Base):
    __tablename__ = "llm_calls"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    problem_id: Mapped[int | None] = mapped_column(ForeignKey("problems.id"))
    candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id"))
    provider: Mapped[str] = mapped_column(_Text)
    model: Mapped[str] = mapped_column(_Text)
    prompt: Mapped[Any] = mapped_column(_JSON)
    response: Mapped[str] = mapped_column(_Text)
    usage: Mapped[Any] = mapped_column(_JSON, nullable=True)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    latency_s: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(_Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


# -- Frozen records --------------------------------------------------------------------


