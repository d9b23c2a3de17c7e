"""The result store: every run, problem, candidate, verdict, baseline and LLM call.

SQLite by default (one file, WAL, one writer at a time), PostgreSQL for runs spread over
machines. Each write method commits its own short transaction before it returns, so a
verdict is durable as soon as it is produced; a crash loses at most the call in flight.
Reads return frozen records, never live ORM objects, so callers never hold a session.

Example:
    >>> from kbench.store import Store
    >>> store = Store("sqlite://")  # in memory
    >>> run = store.create_run("demo", model="fake")
    >>> store.get_run("demo").status
    <RunStatus.RUNNING: 'running'>
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

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
    create_engine,
    event,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    SQLAlchemyError,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

from kbench.errors import StoreError
from sandbox.verdict import Status, Timing, Verdict

__all__ = [
    "Store",
    "RunStatus",
    "RunRecord",
    "ProblemRecord",
    "CandidateRecord",
    "VerdictRecord",
    "BaselineRecord",
    "DeviceFactsRecord",
    "LLMCallRecord",
    "ResultRow",
    "ENV_VAR",
]

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


def _to_json(x: Any) -> Any:
    """A JSON-safe copy: non-finite floats become ``{"__float__": "nan"}`` markers (strict
    JSON and PostgreSQL's JSONB reject NaN), tuples become lists, enums their values."""
    if isinstance(x, float):
        return x if math.isfinite(x) else {_NONFINITE: repr(x)}
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, enum.Enum):
        return _to_json(x.value)
    if isinstance(x, Mapping):
        return {str(k): _to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_json(v) for v in x]
    return str(x)  # e.g. a torch.dtype in shape params: keep something readable


def _from_json(x: Any) -> Any:
    if isinstance(x, dict):
        if len(x) == 1 and _NONFINITE in x:
            return float(x[_NONFINITE])
        return {k: _from_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_from_json(v) for v in x]
    return x


class _JSON(TypeDecorator):
    """JSON (JSONB on PostgreSQL) that round-trips NaN and infinities."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else _to_json(value)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else _from_json(value)


# -- Secrets never stored --------------------------------------------------------------

_SECRET_KEYS = {
    "authorization", "proxy-authorization", "headers", "api_key", "api-key", "apikey",
    "x-api-key", "openai-api-key", "anthropic-api-key", "password", "secret",
}
_SECRET_ENV = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)
_SECRET_TEXT = re.compile(r"(sk-[A-Za-z0-9_\-]{16,}|Bearer\s+[A-Za-z0-9._\-]{16,})")


def _scrub_text(s: str) -> str:
    for name, value in os.environ.items():
        if len(value) >= 8 and _SECRET_ENV.search(name) and value in s:
            s = s.replace(value, "[redacted]")
    return _SECRET_TEXT.sub("[redacted]", s)


def _scrub(x: Any) -> Any:
    """Drops header- and key-like entries and redacts secret values anywhere in ``x``."""
    if isinstance(x, str):
        return _scrub_text(x)
    if isinstance(x, Mapping):
        return {k: _scrub(v) for k, v in x.items() if str(k).lower() not in _SECRET_KEYS}
    if isinstance(x, (list, tuple)):
        return [_scrub(v) for v in x]
    return x


# -- Tables ----------------------------------------------------------------------------


class _Base(DeclarativeBase):
    pass


class _Run(_Base):
    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('running', 'finished', 'interrupted', 'failed')", name="run_status"
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING.value)
    config: Mapped[Any] = mapped_column(_JSON, nullable=True)
    model: Mapped[str | None] = mapped_column(String(200))
    strategy: Mapped[str | None] = mapped_column(String(100))
    notes: Mapped[str | None] = mapped_column(Text)


class _Problem(_Base):
    __tablename__ = "problems"
    __table_args__ = (UniqueConstraint("key", "source_hash"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(300), index=True)
    suite: Mapped[str | None] = mapped_column(String(100))
    source_hash: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class _Candidate(_Base):
    __tablename__ = "candidates"
    __table_args__ = (Index("ix_candidates_run_problem", "run_id", "problem_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    problem_id: Mapped[int] = mapped_column(ForeignKey("problems.id"))
    source: Mapped[str] = mapped_column(Text)
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
    reason: Mapped[str] = mapped_column(Text)
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
    problem_key: Mapped[str] = mapped_column(String(300))
    source_hash: Mapped[str] = mapped_column(String(128))
    shape_name: Mapped[str] = mapped_column(String(200))
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
    provider: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[Any] = mapped_column(_JSON)
    response: Mapped[str] = mapped_column(Text)
    usage: Mapped[Any] = mapped_column(_JSON, nullable=True)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    latency_s: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


# -- Frozen records --------------------------------------------------------------------


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


def _rank(v: _Verdict) -> tuple[bool, float, int]:
    # Best: correct first, then the highest eager speedup (unmeasured lowest), then latest.
    speed = v.speedup_eager if v.passed and v.speedup_eager is not None else -math.inf
    return (v.passed, speed, v.id)


# -- Opening ---------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def _resolve_url(url: str | None) -> URL:
    raw = url if url is not None else os.environ.get(ENV_VAR) or str(Path.cwd() / "kbench.db")
    if "://" not in raw:  # a plain path
        raw = "sqlite:///" + str(Path(raw).expanduser().absolute())
    try:
        u = make_url(raw)
    except ArgumentError as e:
        raise StoreError(f"store URL {raw!r} is malformed: {_one_line(e)}") from e
    if u.drivername in ("postgres", "postgresql"):
        # The kbench[postgres] extra installs psycopg 3, not SQLAlchemy's default psycopg2.
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
        path = Path(u.database)
        if path.is_dir():
            raise StoreError(f"store path {path} is a directory; give a file such as {path}/kbench.db")
        if not path.parent.is_dir():
            raise StoreError(f"store path {path}: directory {path.parent} does not exist")
    return u


def _sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, issue BEGIN (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock up front, so the busy timeout queues them instead of
        # failing a read-then-write transaction with "database is locked".
        write = conn.get_execution_options().get("kbench_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class Store:
    """The result store. Safe to share between threads; every method commits on return.

    Args:
        url: A SQLAlchemy URL (``sqlite:///path.db``, ``postgresql://user@host/db``) or a
            plain file path for SQLite. ``None``: ``$KBENCH_STORE`` if set, else
            ``kbench.db`` in the current directory.

    Raises:
        StoreError: The database cannot be opened (bad path, unreachable server, missing
            driver); the message is one line and never shows a password.
    """

    def __init__(self, url: str | None = None) -> None:
        u = _resolve_url(url)
        self.url = u.render_as_string(hide_password=True)
        backend = u.get_backend_name()
        kwargs: dict[str, Any] = {}
        if backend == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False}
            if u.database in (None, "", ":memory:"):
                kwargs["poolclass"] = StaticPool  # one shared connection, else one db each
        elif backend == "postgresql":
            kwargs["pool_pre_ping"] = True
            if "connect_timeout" not in u.query:
                kwargs["connect_args"] = {"connect_timeout": 10}
        try:
            self._engine = create_engine(u, **kwargs)
        except ImportError as e:
            hint = f"; {_POSTGRES_HINT}" if backend == "postgresql" else ""
            raise StoreError(f"store {self.url}: database driver missing ({e}){hint}") from e
        except (NoSuchModuleError, ArgumentError) as e:
            raise StoreError(
                f"store {self.url}: unsupported URL ({_one_line(e)}); "
                "use sqlite:///path.db or postgresql://user@host/db"
            ) from e
        if backend == "sqlite":
            _sqlite_events(self._engine)
        writer = self._engine.execution_options(kbench_write=True)
        self._read = sessionmaker(bind=self._engine, expire_on_commit=False)
        self._write = sessionmaker(bind=writer, expire_on_commit=False)
        try:
            _Base.metadata.create_all(writer)
        except SQLAlchemyError as e:
            self._engine.dispose()
            raise StoreError(f"cannot open store {self.url}: {_one_line(e)}") from e

    @property
    def engine(self) -> Engine:
        """The underlying engine (for diagnostics; prefer the methods)."""
        return self._engine

    def close(self) -> None:
        """Closes pooled connections. The store may not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def _tx(self, fn: Callable[[Session], T], *, write: bool = True, conflict: str = "") -> T:
        """Runs ``fn`` in one transaction, committed before returning.

        An ``IntegrityError`` is retried once when ``conflict`` is empty (another writer won
        an upsert race; the retry finds its row), else raised as ``StoreError(conflict)``.
        """
        for attempt in (0, 1):
            try:
                with (self._write if write else self._read)() as s, s.begin():
                    return fn(s)
            except IntegrityError as e:
                if conflict:
                    raise StoreError(conflict) from e
                if attempt == 1:
                    raise StoreError(f"store {self.url}: {_one_line(e)}") from e
            except DBAPIError as e:  # the database failed; anything else is a bug in kbench
                raise StoreError(f"store {self.url}: {_one_line(e)}") from e
        raise AssertionError("unreachable")

    # -- runs ----------------------------------------------------------------------------

    def create_run(
        self,
        name: str,
        model: str | None = None,
        strategy: str | None = None,
        config: dict[str, Any] | None = None,
        notes: str | None = None,
    ) -> int:
        """Creates a run in status ``running`` and returns its id.

        Raises:
            StoreError: A run of that name exists.
        """
        taken = f"a run named {name!r} already exists; pick another name or use --resume"

        def fn(s: Session) -> int:
            if s.scalar(select(_Run.id).where(_Run.name == name)) is not None:
                raise StoreError(taken)
            run = _Run(name=name, model=model, strategy=strategy, config=config, notes=notes)
            s.add(run)
            s.flush()
            return run.id

        return self._tx(fn, conflict=taken)

    def get_run(self, name: str) -> RunRecord | None:
        """The run of that name, or ``None``."""
        def fn(s: Session) -> RunRecord | None:
            run = s.scalar(select(_Run).where(_Run.name == name))
            return None if run is None else _run_rec(run)

        return self._tx(fn, write=False)

    def list_runs(self) -> list[RunRecord]:
        """All runs, oldest first."""
        return self._tx(lambda s: [_run_rec(r) for r in s.scalars(select(_Run).order_by(_Run.id))],
                        write=False)

    def set_run_status(self, run_id: int, status: RunStatus | str) -> None:
        """Sets a run's status (``running``, ``finished``, ``interrupted``, ``failed``)."""
        st = RunStatus(status)

        def fn(s: Session) -> None:
            run = s.get(_Run, run_id)
            if run is None:
                raise StoreError(f"no run with id {run_id}")
            run.status = st.value

        self._tx(fn)

    # -- problems and candidates ---------------------------------------------------------

    def upsert_problem(self, spec_key: str, suite: str | None, source_hash: str, source: str) -> int:
        """Returns the id of problem (``spec_key``, ``source_hash``), adding it if new."""

        def fn(s: Session) -> int:
            pid = s.scalar(select(_Problem.id).where(
                _Problem.key == spec_key, _Problem.source_hash == source_hash))
            if pid is None:
                p = _Problem(key=spec_key, suite=suite, source_hash=source_hash, source=source)
                s.add(p)
                s.flush()
                pid = p.id
            return pid

        return self._tx(fn)

    def get_problem(self, problem_id: int) -> ProblemRecord | None:
        """The problem with that id, or ``None``."""
        def fn(s: Session) -> ProblemRecord | None:
            p = s.get(_Problem, problem_id)
            return None if p is None else ProblemRecord(p.id, p.key, p.suite, p.source_hash, p.source)

        return self._tx(fn, write=False)

    def add_candidate(
        self,
        problem_id: int,
        source: str,
        backend: str,
        run_id: int | None = None,
        origin: str = "eval",
        parent_id: int | None = None,
        attempt: int = 0,
        knobs: dict[str, Any] | None = None,
    ) -> int:
        """Stores a candidate's source; returns its id.

        Args:
            origin: Where it came from: ``eval`` (a file given to ``kbench eval``), ``llm``,
                ``tuned`` (a tuner's configuration of ``parent_id``) or ``replay``.
            knobs: The tuner's knob values, or the declared ``TUNE`` space.
        """
        def fn(s: Session) -> int:
            c = _Candidate(problem_id=problem_id, source=source, backend=backend, run_id=run_id,
                           origin=origin, parent_id=parent_id, attempt=attempt, knobs=knobs)
            s.add(c)
            s.flush()
            return c.id

        return self._tx(fn)

    def candidates_for(self, run_id: int, problem_key: str) -> list[CandidateRecord]:
        """A run's candidates for one problem, oldest first, each with its latest verdict."""
        def fn(s: Session) -> list[CandidateRecord]:
            rows = s.execute(
                select(_Candidate, _Problem.key)
                .join(_Problem, _Candidate.problem_id == _Problem.id)
                .where(_Candidate.run_id == run_id, _Problem.key == problem_key)
                .order_by(_Candidate.id)
            ).all()
            latest: dict[int, _Verdict] = {}
            if rows:
                ids = [c.id for c, _ in rows]
                for v in s.scalars(select(_Verdict).where(_Verdict.candidate_id.in_(ids))
                                   .order_by(_Verdict.id)):
                    latest[v.candidate_id] = v
            return [
                CandidateRecord(c.id, c.run_id, c.problem_id, key, c.source, c.backend, c.origin,
                                c.parent_id, c.attempt, c.knobs, _utc(c.created_at),
                                _verdict_rec(latest[c.id]) if c.id in latest else None)
                for c, key in rows
            ]

        return self._tx(fn, write=False)

    # -- verdicts ------------------------------------------------------------------------

    def add_verdict(self, candidate_id: int, verdict: Verdict, fingerprint_hash: str) -> int:
        """Stores a verdict (committed before returning); returns its id.

        The whole record is kept as ``payload`` (``Verdict.to_dict()``); status, speedups
        and SOL% are copied into columns for queries.
        """
        def fn(s: Session) -> int:
            v = _Verdict(
                candidate_id=candidate_id, status=verdict.status.value, reason=verdict.reason,
                passed=verdict.passed, speedup_eager=_finite(verdict.speedup_eager),
                speedup_compile=_finite(verdict.speedup_compile),
                sol_pct=_finite(verdict.sol_pct), payload=verdict.to_dict(),
                fingerprint_hash=fingerprint_hash,
            )
            s.add(v)
            s.flush()
            return v.id

        return self._tx(fn)

    def verdicts_for_candidate(self, candidate_id: int) -> list[VerdictRecord]:
        """A candidate's verdicts, oldest first."""
        return self._tx(
            lambda s: [_verdict_rec(v) for v in s.scalars(
                select(_Verdict).where(_Verdict.candidate_id == candidate_id).order_by(_Verdict.id))],
            write=False,
        )

    def results(self, run_id: int) -> list[ResultRow]:
        """Each problem attempted in a run with its best verdict's payload, by problem key.

        Best: a correct verdict with the highest eager speedup, else the latest. A problem
        counts as attempted if it has a candidate or an LLM call in the run; one without any
        verdict gets ``None`` (it still counts in fast_p's denominator).
        """
        def fn(s: Session) -> list[ResultRow]:
            keys = set(s.scalars(
                select(_Problem.key).join(_Candidate, _Candidate.problem_id == _Problem.id)
                .where(_Candidate.run_id == run_id)))
            keys |= set(s.scalars(
                select(_Problem.key).join(_LLMCall, _LLMCall.problem_id == _Problem.id)
                .where(_LLMCall.run_id == run_id)))
            best: dict[str, _Verdict] = {}
            rows = s.execute(
                select(_Verdict, _Problem.key)
                .join(_Candidate, _Verdict.candidate_id == _Candidate.id)
                .join(_Problem, _Candidate.problem_id == _Problem.id)
                .where(_Candidate.run_id == run_id)
            )
            for v, key in rows:
                if key not in best or _rank(v) > _rank(best[key]):
                    best[key] = v
            return [ResultRow(k, best[k].payload if k in best else None) for k in sorted(keys)]

        return self._tx(fn, write=False)

    # -- baselines and device facts ------------------------------------------------------

    def get_baseline(
        self, problem_key: str, source_hash: str, shape_name: str, mode: str, fingerprint_hash: str
    ) -> BaselineRecord | None:
        """The cached reference timing for one shape, mode and device, or ``None``."""
        def fn(s: Session) -> BaselineRecord | None:
            b = s.scalar(select(_Baseline).where(
                _Baseline.problem_key == problem_key, _Baseline.source_hash == source_hash,
                _Baseline.shape_name == shape_name, _Baseline.mode == mode,
                _Baseline.fingerprint_hash == fingerprint_hash))
            return None if b is None else _baseline_rec(b)

        return self._tx(fn, write=False)

    def put_baseline(
        self,
        problem_key: str,
        source_hash: str,
        shape_name: str,
        mode: str,
        fingerprint_hash: str,
        timing: Timing,
        *,
        shape: Mapping[str, Any] | None = None,
        fingerprint: Mapping[str, Any] | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> int:
        """Stores (or replaces) a reference timing; returns its id.

        Args:
            mode: ``eager`` or ``compile`` (``torch.compile``).
            timing: The measurement; kept whole in ``payload["timing"]``.
            payload: Anything else worth keeping (e.g. compile time), merged into payload.
        """
        if mode not in _MODES:
            raise ValueError(f"baseline mode must be one of {_MODES}, not {mode!r}")
        body = {**(payload or {}), "timing": asdict(timing)}
        where = (
            _Baseline.problem_key == problem_key, _Baseline.source_hash == source_hash,
            _Baseline.shape_name == shape_name, _Baseline.mode == mode,
            _Baseline.fingerprint_hash == fingerprint_hash,
        )

        def fn(s: Session) -> int:
            b = s.scalar(select(_Baseline).where(*where))
            if b is None:
                b = _Baseline(problem_key=problem_key, source_hash=source_hash,
                              shape_name=shape_name, mode=mode, fingerprint_hash=fingerprint_hash)
                s.add(b)
            b.shape = None if shape is None else dict(shape)
            b.fingerprint = None if fingerprint is None else dict(fingerprint)
            b.payload = body
            b.median_ms, b.iqr_ms, b.count = timing.median_ms, timing.iqr_ms, timing.count
            b.created_at = _now()
            s.flush()
            return b.id

        return self._tx(fn)

    def get_device_facts(self, fingerprint_hash: str) -> DeviceFactsRecord | None:
        """Measured facts (bandwidth, matmul peaks, ...) for a device fingerprint, or ``None``."""
        def fn(s: Session) -> DeviceFactsRecord | None:
            d = s.scalar(select(_DeviceFacts).where(_DeviceFacts.fingerprint_hash == fingerprint_hash))
            return None if d is None else DeviceFactsRecord(d.fingerprint_hash, d.fingerprint, d.facts, _utc(d.created_at))

        return self._tx(fn, write=False)

    def put_device_facts(
        self, fingerprint_hash: str, fingerprint: Mapping[str, Any], facts: Mapping[str, Any]
    ) -> None:
        """Stores (or replaces) the measured facts for a device fingerprint."""
        def fn(s: Session) -> None:
            d = s.scalar(select(_DeviceFacts).where(_DeviceFacts.fingerprint_hash == fingerprint_hash))
            if d is None:
                d = _DeviceFacts(fingerprint_hash=fingerprint_hash)
                s.add(d)
            d.fingerprint, d.facts, d.created_at = dict(fingerprint), dict(facts), _now()

        self._tx(fn)

    # -- LLM calls -----------------------------------------------------------------------

    def add_llm_call(
        self,
        run_id: int,
        provider: str,
        model: str,
        messages: Iterable[Mapping[str, Any]],
        response: str,
        *,
        problem_id: int | None = None,
        candidate_id: int | None = None,
        usage: Mapping[str, Any] | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cost_usd: float | None = None,
        latency_s: float | None = None,
        error: str | None = None,
    ) -> int:
        """Records one LLM call (also a failed one: ``error`` set); returns its id.

        Secrets are never stored: there is deliberately no parameter for request headers or
        client settings, and as a second line of defence header- or key-like entries
        (``authorization``, ``api_key``, ``headers``, ...) are dropped from ``messages`` and
        ``usage``, and values of ``*_API_KEY``/``*TOKEN``/``*SECRET`` environment variables and
        ``sk-...``/``Bearer ...`` strings are redacted from all stored text.
        """
        def fn(s: Session) -> int:
            c = _LLMCall(
                run_id=run_id, provider=provider, model=model,
                prompt=_scrub([dict(m) for m in messages]), response=_scrub_text(response),
                problem_id=problem_id, candidate_id=candidate_id,
                usage=_scrub(dict(usage)) if usage is not None else None,
                input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost_usd,
                latency_s=latency_s, error=_scrub_text(error) if error is not None else None,
            )
            s.add(c)
            s.flush()
            return c.id

        return self._tx(fn)

    def add_attempt(
        self,
        run_id: int,
        problem_id: int,
        provider: str,
        model: str,
        messages: Iterable[Mapping[str, Any]],
        response: str,
        *,
        source: str | None,
        backend: str,
        attempt: int = 0,
        parent_id: int | None = None,
        usage: Mapping[str, Any] | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cost_usd: float | None = None,
        latency_s: float | None = None,
        error: str | None = None,
    ) -> tuple[int, int | None]:
        """One LLM reply and the candidate extracted from it (``source`` None: no usable
        code), in ONE transaction, so a kill between the two never leaves half an attempt.
        Returns ``(llm_call_id, candidate_id or None)``."""
        def fn(s: Session) -> tuple[int, int | None]:
            cand_id = None
            if source is not None:
                c = _Candidate(problem_id=problem_id, source=source, backend=backend,
                               run_id=run_id, origin="llm", parent_id=parent_id, attempt=attempt)
                s.add(c)
                s.flush()
                cand_id = c.id
            call = _LLMCall(
                run_id=run_id, provider=provider, model=model,
                prompt=_scrub([dict(m) for m in messages]), response=_scrub_text(response),
                problem_id=problem_id, candidate_id=cand_id,
                usage=_scrub(dict(usage)) if usage is not None else None,
                input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost_usd,
                latency_s=latency_s, error=_scrub_text(error) if error is not None else None,
            )
            s.add(call)
            s.flush()
            return call.id, cand_id

        return self._tx(fn)

    def llm_calls_for(self, run_id: int) -> list[LLMCallRecord]:
        """A run's LLM calls, oldest first (for cost reports and the replay provider)."""
        return self._tx(
            lambda s: [_llm_rec(c) for c in s.scalars(
                select(_LLMCall).where(_LLMCall.run_id == run_id).order_by(_LLMCall.id))],
            write=False,
        )
