"""The Store: opening a database and every read and write, each in its own transaction."""

from __future__ import annotations

import os
import random
import re
import sqlite3
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import (
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateTable

from agents.redact import redact, redact_obj
from kbench.errors import StoreError
from kbench.scoring import best_verdict
from kbench.store._lineage import LineageRecord, _Lineage, _lineage_rec, _lineage_row
from kbench.store._owners import _Owners  # who works on a run
from kbench.store._records import (
    BaselineRecord,
    CandidateRecord,
    DeviceFactsRecord,
    LLMCallRecord,
    ProblemRecord,
    ResultRow,
    RunRecord,
    VerdictRecord,
    _baseline_rec,
    _llm_rec,
    _run_rec,
    _verdict_rec,
)
from kbench.store._selection import _Selection, _Selections  # issue 10: final selections
from kbench.store._tables import (
    _BUSY_TIMEOUT_MS,
    _MODES,
    _POSTGRES_HINT,
    ENV_VAR,
    RunStatus,
    T,
    _Base,
    _Baseline,
    _Candidate,
    _DeviceFacts,
    _finite,
    _LLMCall,
    _now,
    _Problem,
    _Run,
    _utc,
    _Verdict,
)
from kbench.store._tuned import _TunedConfigs  # issue 10: tuned configurations
from sandbox.verdict import Timing, Verdict


def _llm_call_row(
    run_id: int, provider: str, model: str, messages: Iterable[Mapping[str, Any]],
    response: str, *, problem_id: int | None, candidate_id: int | None,
    usage: Mapping[str, Any] | None, input_tokens: int | None, output_tokens: int | None,
    cost_usd: float | None, latency_s: float | None, error: str | None,
) -> _LLMCall:
    """The one place an LLM call row is built, so every path stores it scrubbed the same
    way (:func:`agents.redact.redact_obj` on messages and usage, :func:`redact` on text)."""
    return _LLMCall(
        run_id=run_id, provider=provider, model=model,
        prompt=redact_obj([dict(m) for m in messages]), response=redact(response),
        problem_id=problem_id, candidate_id=candidate_id,
        usage=redact_obj(dict(usage)) if usage is not None else None,
        input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost_usd,
        latency_s=latency_s, error=redact(error) if error is not None else None,
    )


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


# user:password@ in any URL-like string (a store URL in a run's config, a DSN in a note), and
# a ?password=... query parameter (libpq takes the password there too).
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@")
_QUERY_PASSWORD = re.compile(r"(://\S*[?&]password=)[^&\s]+", re.IGNORECASE)


def _mask_urls(x: Any) -> Any:
    """A copy with the password of every ``scheme://user:password@host`` masked as ``***``:
    a run's config names its store, and a store's password is never stored."""
    if isinstance(x, str):
        return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", x))
    if isinstance(x, Mapping):
        return {k: _mask_urls(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_mask_urls(v) for v in x]
    return x


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", None), "sqlstate", None)


def _resolve_url(url: str | None) -> tuple[URL, str]:
    """The URL to connect with, and the URL as shown (as given, password masked)."""
    raw = url if url is not None else os.environ.get(ENV_VAR) or str(Path.cwd() / "kbench.db")
    if "://" not in raw:  # a plain path
        raw = "sqlite:///" + str(Path(raw).expanduser().absolute())
    try:
        u = make_url(raw)
    except ArgumentError as e:
        raise StoreError(f"store URL {_mask_urls(raw)!r} is malformed: {_one_line(e)}") from e
    shown = _mask_urls(u.render_as_string(hide_password=True))
    if u.drivername in ("postgres", "postgresql"):
        # The kbench[postgres] extra installs psycopg 3, not SQLAlchemy's default psycopg2.
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
        path = Path(u.database)
        if path.is_dir():
            raise StoreError(f"store path {path} is a directory; give a file such as {path}/kbench.db")
        if not path.parent.is_dir():
            raise StoreError(f"store path {path}: directory {path.parent} does not exist")
    return u, shown


_SCHEMA_LOCK = 0x6B62656E6368  # "kbench": the advisory lock creating the schema
_ROLLED_BACK = ("40001", "40P01")  # serialization failure, deadlock detected
_RETRIES = 10  # with full-jitter backoff capped at 1 s: a few seconds at worst
_PG_CHECK = ("check that the PostgreSQL server is running and that host, port, user, password "
             "and database name are right (--store, store in kbench.toml or $KBENCH_STORE)")


def _sqlite_events(engine: Engine, read_only: bool = False,
                   temp_ddl: tuple[str, ...] = ()) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, issue BEGIN (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        if not read_only:  # (switching the journal mode writes the file's header)
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        for ddl in temp_ddl:  # read-only: kbench's tables this (older) store lacks, empty
            cur.execute(ddl)
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock up front, so the busy timeout queues them instead of
        # failing a read-then-write transaction with "database is locked".
        write = conn.get_execution_options().get("kbench_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


_MALFORMED = ("database disk image is malformed", "malformed database schema")


def _damaged(path: Path | str, why: str) -> StoreError:
    return StoreError(f"the store at {path} is damaged ({why}): keep a copy, then restore it "
                      "from a backup or start a new store with --store NEW")


def _ro_uri(path: Path, immutable: bool = False) -> str:
    """The ``file:`` URI that opens ``path`` for reading only (``immutable``: also where its
    -wal/-shm files cannot be made, on a read-only file system)."""
    return ("file:" + urllib.parse.quote(str(path)) + "?mode=ro"
            + ("&immutable=1" if immutable else ""))


def _ro_connect(path: Path) -> tuple[sqlite3.Connection, bool]:
    """A read-only connection to the SQLite file ``path``, proven by one read, and whether it
    had to be opened ``immutable`` (a WAL store in a folder where its -shm file cannot be
    made: nothing else can write there either).

    Raises:
        sqlite3.Error: The file cannot be read at all.
    """
    last: sqlite3.Error | None = None
    for immutable in (False, True):
        conn = sqlite3.connect(_ro_uri(path, immutable), uri=True, check_same_thread=False,
                               timeout=_BUSY_TIMEOUT_MS / 1000)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn, immutable
        except sqlite3.Error as e:
            conn.close()
            last = e
            wal = Path(f"{path}-wal")
            if "unable to open" not in str(e) or (wal.exists() and wal.stat().st_size):
                break  # (immutable would not read the changes a -wal holds)
    assert last is not None
    raise last


def _quick_check(path: Path) -> str | None:
    """Why SQLite finds the file at ``path`` damaged (``PRAGMA quick_check``, first problem
    only), or None. Read through a read-only connection: the check never writes, and never
    checkpoints a WAL left behind into the damaged file. Its cost grows with the file (see
    :data:`QUICK_CHECK_MAX_BYTES`)."""
    try:
        conn, _ = _ro_connect(path)
    except sqlite3.Error as e:
        text = str(e)
        return text if any(m in text for m in _MALFORMED) else None  # Store() says the rest
    try:
        row = conn.execute("PRAGMA quick_check(1)").fetchone()
    except sqlite3.Error as e:  # (busy, say, is no damage: Store() says what it is)
        return "database disk image is malformed" if any(m in str(e) for m in _MALFORMED) else None
    finally:
        conn.close()
    return None if row and row[0] == "ok" else "database disk image is malformed"


#: Stores larger than this are opened for writing without ``PRAGMA quick_check``: it reads
#: the whole file, about 1 ms per MB from the page cache (45 ms for a 77 MB store of 5,000
#: candidates with their verdicts and LLM calls, 0.8 s for 770 MB), more from disk.
QUICK_CHECK_MAX_BYTES = 256 * 2**20


class Store(_TunedConfigs, _Selections, _Owners):
    """The result store. Safe to share between threads; every method commits on return.

    Args:
        url: A SQLAlchemy URL (``sqlite:///path.db``, ``postgresql://user@host/db``) or a
            plain file path for SQLite. ``None``: ``$KBENCH_STORE`` if set, else
            ``kbench.db`` in the current directory.
        read_only: ``True``: for reading only (commands that only read). A SQLite file is
            opened with ``mode=ro``: nothing is written to it or beside it (no journal-mode
            switch, no tables created; tables an older store lacks read as empty), so a store
            on a read-only disk, folder or file can be read. Every write then raises
            :class:`StoreError`. ``False``: for writing; a SQLite store that cannot be
            written, or that ``PRAGMA quick_check`` finds damaged, is refused before anything
            is written. ``None`` (default): as ``False``, except that an existing SQLite
            store in a place that cannot be written is opened as with ``True``.

    Raises:
        StoreError: The database cannot be opened (bad path, unreachable server, missing
            driver, a damaged or unwritable SQLite file); the message is one line and never
            shows a password.
    """

    def __init__(self, url: str | None = None, *, read_only: bool | None = None) -> None:
        u, self.url = _resolve_url(url)
        backend = u.get_backend_name()
        path = (Path(u.database) if backend == "sqlite" and u.database not in (None, "", ":memory:")
                else None)
        self.path = path  # the SQLite file, None for other databases and in-memory ones
        if path is not None:
            writable = path.exists() and os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
            if read_only is None:
                read_only = path.exists() and not writable
            if not read_only:
                self._check_writable(path, writable)
        self.read_only = bool(read_only)
        kwargs: dict[str, Any] = {}
        temp_ddl: tuple[str, ...] = ()
        if backend == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False}
            if path is None:
                kwargs["poolclass"] = StaticPool  # one shared connection, else one db each
            elif self.read_only:
                kwargs["creator"] = self._ro_creator(path)
                temp_ddl = self._missing_tables(path)
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
            _sqlite_events(self._engine, read_only=self.read_only and path is not None,
                           temp_ddl=temp_ddl)
        writer = self._engine.execution_options(kbench_write=True)
        self._read = sessionmaker(bind=self._engine, expire_on_commit=False)
        self._write = sessionmaker(bind=writer, expire_on_commit=False)
        # Close the pool's connections when this store goes, or at exit if it is still
        # open: SQLite folds a WAL store's -wal file back into the database when its last
        # connection closes. The console script leaves with os._exit after the atexit
        # handlers, so without this the runs stayed in kbench.db-wal, and a copy of
        # kbench.db alone lost them.
        weakref.finalize(self, self._engine.dispose)
        try:
            if backend == "sqlite":
                self._refuse_foreign(u.database)
                if not (self.read_only and path is not None):
                    _Base.metadata.create_all(writer)
            else:
                with writer.begin() as conn:
                    if backend == "postgresql":
                        # Runs starting at once on a new database would race to CREATE the
                        # same tables (a unique violation in pg_type): one at a time.
                        conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
                    _Base.metadata.create_all(conn)
        except SQLAlchemyError as e:
            self._engine.dispose()
            why = _one_line(e)
            if path is not None and any(m in why for m in _MALFORMED):
                raise _damaged(path, why) from e
            unreachable = backend == "postgresql" and isinstance(e, OperationalError)
            hint = f"; {_PG_CHECK}; nothing was written" if unreachable else ""
            raise StoreError(f"cannot open store {self.url}: {why}{hint}") from e

    def _check_writable(self, path: Path, writable: bool) -> None:
        """Opening ``path`` for writing: refuse, before anything is written, a store that
        cannot be written (or made) there, and one that SQLite finds damaged."""
        if not path.exists():
            if not os.access(path.parent, os.W_OK | os.X_OK):
                raise StoreError(f"the store at {path} cannot be created: its folder is not "
                                 "writable (read-only location?); give --store a path in a "
                                 "writable folder")
            return
        if not writable:
            what = "file" if not os.access(path, os.W_OK) else "folder"
            raise StoreError(f"the store at {path} cannot be written: its {what} is read-only "
                             "(it can still be read: kbench runs list/show, report, export); "
                             "copy it to a writable place or give --store NEW")
        if path.stat().st_size <= QUICK_CHECK_MAX_BYTES:
            why = _quick_check(path)
            if why is not None:
                raise _damaged(path, why)

    @staticmethod
    def _ro_creator(path: Path) -> Callable[[], sqlite3.Connection]:
        """Connections that only read ``path`` (see :func:`_ro_connect`).

        Raises:
            StoreError: ``path`` cannot be read even so.
        """
        try:
            probe, immutable = _ro_connect(path)
        except sqlite3.Error as e:
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if any(m in text for m in _MALFORMED):
                raise _damaged(path, text) from e
            raise StoreError(f"the store at {path} cannot be read (read-only location?): "
                             f"{text}") from e
        probe.close()
        uri = _ro_uri(path, immutable)
        return lambda: sqlite3.connect(uri, uri=True, check_same_thread=False,
                                       timeout=_BUSY_TIMEOUT_MS / 1000)

    @staticmethod
    def _missing_tables(path: Path) -> tuple[str, ...]:
        """``CREATE TEMP TABLE`` statements for kbench's tables that the store at ``path``
        lacks (made by an older kbench): read-only, they read as empty instead of failing.
        None for a file holding no kbench table (another program's: refused later)."""
        from sqlalchemy.dialects import sqlite as sqlite_dialect

        try:
            conn, _ = _ro_connect(path)
        except sqlite3.Error:
            return ()  # said when the engine reads it
        try:
            have = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error:
            return ()
        finally:
            conn.close()
        ours = _Base.metadata.sorted_tables
        if have and not have & {t.name for t in ours}:
            return ()
        dialect = sqlite_dialect.dialect()
        return tuple(
            re.sub(r"^\s*CREATE TABLE", "CREATE TEMP TABLE",
                   str(CreateTable(t).compile(dialect=dialect)))
            for t in ours if t.name not in have)

    def _refuse_foreign(self, database: str | None) -> None:
        """A SQLite file that holds tables but none of kbench's is another program's
        database: refused, rather than given kbench's tables beside its own."""
        from sqlalchemy import inspect

        tables = set(inspect(self._engine).get_table_names())
        if tables and not tables & set(_Base.metadata.tables):
            self._engine.dispose()
            shown = ", ".join(sorted(tables)[:4]) + (", ..." if len(tables) > 4 else "")
            raise StoreError(f"store {database}: holds another program's tables ({shown}), "
                             "not kbench's; choose another --store")

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
        A serialization failure or a deadlock (PostgreSQL rolled the whole transaction back,
        so nothing of it was written) is retried after a short random pause.
        """
        if write and self.read_only:
            where = self.path if self.path is not None else self.url
            raise StoreError(f"the store at {where} was opened for reading only; nothing was "
                             "written (a command that writes needs a writable --store)")
        races = retries = 0
        while True:
            try:
                with (self._write if write else self._read)() as s, s.begin():
                    return fn(s)
            except IntegrityError as e:
                if conflict:
                    raise StoreError(conflict) from e
                races += 1
                if races > 1:
                    raise StoreError(f"store {self.url}: {_one_line(e)}") from e
            except DBAPIError as e:  # the database failed; anything else is a bug in kbench
                if _sqlstate(e) in _ROLLED_BACK and retries < _RETRIES:
                    retries += 1
                    time.sleep(random.uniform(0, min(1.0, 0.01 * 2 ** retries)))
                    continue
                why = _one_line(e)
                if self.path is not None and any(m in why for m in _MALFORMED):
                    raise _damaged(self.path, why) from e
                hint = f"; {_PG_CHECK}" if e.connection_invalidated else ""
                raise StoreError(f"store {self.url}: {why}{hint}") from e

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
            run = _Run(name=name, model=model, strategy=strategy, config=_mask_urls(config),
                       notes=_mask_urls(notes))
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
        """Each problem attempted in a run with its verdict of record's payload, by problem key.

        The verdict of record is the final selection's winner's (its best verdict) where the
        run has a selection with a winner for that problem; otherwise the best of the
        problem's verdicts as :func:`kbench.scoring.best_verdict` ranks them (correct, then
        the highest eager speedup, then the latest). After a selection the highest single
        timing is not the result: the finalists were re-timed because single timings are
        noisy, and a within-spread tie keeps the simplest candidate, which is the one
        exported. A problem counts as attempted if it has a candidate or an LLM call in the
        run; one without any verdict gets ``None`` (it still counts in fast_p's denominator).
        """

        def fn(s: Session) -> list[ResultRow]:
            keys = set(s.scalars(
                select(_Problem.key).join(_Candidate, _Candidate.problem_id == _Problem.id)
                .where(_Candidate.run_id == run_id)))
            keys |= set(s.scalars(
                select(_Problem.key).join(_LLMCall, _LLMCall.problem_id == _Problem.id)
                .where(_LLMCall.run_id == run_id)))
            payloads: dict[str, list[dict[str, Any]]] = {}
            by_cand: dict[int, list[dict[str, Any]]] = {}
            rows = s.execute(
                select(_Verdict.payload, _Problem.key, _Verdict.candidate_id)
                .join(_Candidate, _Verdict.candidate_id == _Candidate.id)
                .join(_Problem, _Candidate.problem_id == _Problem.id)
                .where(_Candidate.run_id == run_id)
                .order_by(_Verdict.id)  # oldest first, as best_verdict takes them
            )
            for payload, key, cid in rows:
                payloads.setdefault(key, []).append(payload)
                by_cand.setdefault(cid, []).append(payload)
            winners = dict(s.execute(
                select(_Selection.problem_key, _Selection.winner_id)
                .where(_Selection.run_id == run_id, _Selection.winner_id.is_not(None))).all())
            # the winner's own verdicts where it has any, else every verdict of the problem
            return [ResultRow(k, best_verdict(by_cand.get(winners.get(k, -1))
                                              or payloads.get(k, [])))
                    for k in sorted(keys)]

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
            c = _llm_call_row(
                run_id, provider, model, messages, response, problem_id=problem_id,
                candidate_id=candidate_id, usage=usage, input_tokens=input_tokens,
                output_tokens=output_tokens, cost_usd=cost_usd, latency_s=latency_s, error=error)
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
        lineage: Mapping[str, Any] | None = None,
        parent_ids: Iterable[int] = (),
    ) -> tuple[int, int | None]:
        """One LLM reply and the candidate extracted from it (``source`` None: no usable
        code), in ONE transaction, so a kill between the two never leaves half an attempt.
        Returns ``(llm_call_id, candidate_id or None)``.

        ``lineage``: a strategy's tags for this attempt (island, generation, slot, kind,
        rejected, ...), stored in the lineage table with ``parent_ids`` (candidate ids)
        in the same transaction; read back with :meth:`lineage_for`."""
        def fn(s: Session) -> tuple[int, int | None]:
            cand_id = None
            if source is not None:
                c = _Candidate(problem_id=problem_id, source=source, backend=backend,
                               run_id=run_id, origin="llm", parent_id=parent_id, attempt=attempt)
                s.add(c)
                s.flush()
                cand_id = c.id
            call = _llm_call_row(
                run_id, provider, model, messages, response, problem_id=problem_id,
                candidate_id=cand_id, usage=usage, input_tokens=input_tokens,
                output_tokens=output_tokens, cost_usd=cost_usd, latency_s=latency_s, error=error)
            s.add(call)
            s.flush()
            if lineage is not None:
                s.add(_lineage_row(run_id, problem_id, call.id, cand_id, model, lineage,
                                   list(parent_ids)))
            return call.id, cand_id

        return self._tx(fn)

    def llm_calls_for(self, run_id: int) -> list[LLMCallRecord]:
        """A run's LLM calls, oldest first (for cost reports and the replay provider)."""
        return self._tx(
            lambda s: [_llm_rec(c) for c in s.scalars(
                select(_LLMCall).where(_LLMCall.run_id == run_id).order_by(_LLMCall.id))],
            write=False,
        )

    # -- lineage (issue 10) -------------------------------------------------------------

    def lineage_for(self, run_id: int) -> dict[int, LineageRecord]:
        """A run's lineage rows by LLM call id (see :meth:`add_attempt`)."""
        return self._tx(
            lambda s: {r.llm_call_id: _lineage_rec(r) for r in s.scalars(
                select(_Lineage).where(_Lineage.run_id == run_id).order_by(_Lineage.id))},
            write=False,
        )
