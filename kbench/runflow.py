"""The command-line side of runs: set-up and checks, the live view, summaries, run listings."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kbench.config import RunConfig, load_config
from kbench.errors import ConfigError, ProblemError
from kbench.scoring import summary
from kbench.store import ENV_VAR, RunRecord, Store

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_log = logging.getLogger("kbench.runflow")

__all__ = ["call_errors", "execute", "final_selection", "confirm_winners", "list_runs",
           "open_run", "show_run", "store_url", "summary_table"]


def _fmt(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "–" if x is None else f"{x:{spec}}{suffix}"


def _missing_store(db_url: str | None) -> Path | None:
    """The SQLite file a store URL names, if that file does not exist yet (else ``None``).

    Reading commands check this first: opening a :class:`Store` creates its file."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    raw = db_url if db_url is not None else os.environ.get(ENV_VAR) or "kbench.db"
    if "://" in raw:
        try:
            u = make_url(raw)
        except ArgumentError:
            return None  # Store() says what is wrong with it
        if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:"):
            return None
        raw = u.database
    path = Path(raw).expanduser().absolute()
    return None if path.exists() else path


def open_run(name: str, db_url: str | None, *, recent: bool = False,
             read_only: bool = True) -> tuple[Store, RunRecord]:
    """The store at ``db_url`` (``None``: as :func:`store_url` finds it) and its run
    ``name``, never creating a store that is not there. ``read_only`` (default): the store is
    opened for reading only (:class:`Store`), so a store on a read-only disk or folder can be
    read and nothing is written to it; ``False`` for a command that writes (``--resume``).

    Raises:
        ConfigError: No store at ``db_url``, or no run of that name in it (the message names
            the last five runs with ``recent``, else points to ``kbench runs list``).
        StoreError: The store cannot be opened (for writing, without ``read_only``).
    """
    db_url = store_url(db_url)
    missing = _missing_store(db_url)
    if missing is not None:  # reading never creates a store
        raise ConfigError(f"no run named {name!r}: no store at {missing}")
    db = Store(db_url, read_only=read_only)
    rec = db.get_run(name)
    if rec is None:
        if recent:
            names = ", ".join(r.name for r in db.list_runs()[-5:]) or "none"
            raise ConfigError(f"no run named {name!r} in {db.url} (recent runs: {names})")
        raise ConfigError(f"no run named {name!r} in {db.url}; see `kbench runs list`")
    return db, rec


def _config_store(config_path: Path | None) -> str | None:
    """The ``store`` that ``--config`` (or ``./kbench.toml``) names; None without one.

    Only that key is read (the file must be UTF-8 TOML, ``store`` a string): commands that
    only open the store (``runs``, ``report``, ``export``, ``tune``, ``eval``, ``--resume``)
    take nothing else from the file."""
    path = config_path
    if path is None:
        if not Path("kbench.toml").is_file():
            return None
        path = Path("kbench.toml")
    elif not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte "
                          f"0x{e.object[e.start]:02x} at offset {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or e})") from None
    store = data.get("store")
    if store is not None and (not isinstance(store, str) or not store.strip()):
        raise ConfigError(f"{path}: store must be a store URL or SQLite path (a string), "
                          f"not {store!r}")
    return store


def store_url(flag: str | None, config_path: Path | None = None) -> str | None:
    """The store every command opens: ``--store`` if given, else ``$KBENCH_STORE``, else
    the ``store`` of ``--config`` / ``./kbench.toml``, else None (``kbench.db`` in the
    working directory, as :class:`Store` takes None)."""
    if flag:
        return flag
    return os.environ.get(ENV_VAR) or _config_store(config_path) or None


# What ``kbench run --resume`` may change: budgets and where/how work is executed. Anything
# else (models, problems, strategy and its settings, prompts' knobs) is the run's own.
_CHANGEABLE_ON_RESUME = (
    "max_calls", "max_tokens_total", "max_cost_usd", "time_limit_s", "concurrency", "device",
    "store", "timing", "executor", "jobs_per_device", "ray_address", "max_gpu_minutes", "tune",
    "tune_trials")
_FLAG = {"max_cost_usd": "--max-cost", "time_limit_s": "--time-limit",
         "allow_libraries": "--allow-library"}


def _flag(key: str) -> str:
    return _FLAG.get(key, "--" + key.replace("_", "-"))


def _setting(key: str, value: Any) -> Any:
    """A setting as compared on resume: validated as the config validates it, URLs' passwords
    masked as the store keeps them, lists and comma-separated problems as sets."""
    from kbench.store._store import _mask_urls

    try:
        value = getattr(RunConfig.model_validate({key: value}), key)
    except ValidationError:
        pass  # an invalid value differs from any stored one
    value = _mask_urls(value)
    if key == "problems" and isinstance(value, str):
        return frozenset(p.strip() for p in value.split(",") if p.strip())
    if isinstance(value, list):
        return frozenset(map(str, value))
    return value


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _check_resume_flags(overrides: dict[str, Any], rec: RunRecord) -> None:
    """Refuse flags that would change what a resumed run asks (they used to be ignored)."""
    base = rec.config or {}
    fields = RunConfig.model_fields
    diff = []
    for k, v in overrides.items():
        if v is None or k in _CHANGEABLE_ON_RESUME or k not in fields:
            continue
        old = base.get(k, fields[k].default)
        if _setting(k, v) != _setting(k, old):
            diff.append((k, old))
    if not diff:
        return
    how = ("a resumed run keeps its settings (only budgets, --device, --concurrency, "
           "--timing, --executor and tuning may change); start a new run with --name")
    if len(diff) == 1:
        k, old = diff[0]
        raise ConfigError(f"{_flag(k)} differs from run {rec.name}'s {_shown(old)}: {how}")
    raise ConfigError(f"{', '.join(_flag(k) for k, _ in diff)} differ from run {rec.name}'s "
                      f"({'; '.join(f'{_flag(k)} {_shown(old)}' for k, old in diff)}): {how}")


def _resolve(overrides: dict[str, Any], config_path: Path | None, resume: str | None,
             db_url: str | None, name: str | None = None) -> tuple[RunConfig, Store, Any]:
    if resume:
        if name is not None and name != resume:  # (it used to be ignored)
            raise ConfigError(f"--name {name} with --resume {resume}: a resumed run keeps its "
                              f"name; drop --name to continue {resume}, or drop --resume to "
                              f"start a new run named {name}")
        # (None: kbench.db, not ./kbench.toml's store when --config names another file)
        url = store_url(db_url or overrides.get("store"), config_path) or "kbench.db"
        db, rec = open_run(resume, url, recent=True, read_only=False)
        _check_resume_flags(overrides, rec)
        base = dict(rec.config or {})
        # budgets and execution knobs may change on resume; what was asked may not
        for k in _CHANGEABLE_ON_RESUME:
            if overrides.get(k) is not None:
                base[k] = overrides[k]
        cfg = RunConfig(**base)
        return cfg, db, rec
    try:
        cfg = load_config(config_path, overrides)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{config_path or 'kbench.toml'}: not UTF-8 text (byte "
                          f"0x{e.object[e.start]:02x} at offset {e.start})") from None
    # --store, else $KBENCH_STORE, else kbench.toml's store (cfg.store), else kbench.db
    url = db_url or overrides.get("store") or os.environ.get(ENV_VAR) or cfg.store
    if url != cfg.store:
        cfg = cfg.model_copy(update={"store": url})
    return cfg, Store(url, read_only=False), None


class _Lease:
    """This process's hold on its run: claimed in the store (:meth:`Store.claim_run`, so no
    other process resumes it meanwhile), kept alive by a heartbeat thread, released at the
    end. ``run_id`` / ``name``: the run this process created or resumed (None until then)."""

    def __init__(self, db: Store) -> None:
        self.db = db
        self.run_id: int | None = None
        self.name: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.task: asyncio.Task[Any] | None = None  # the run's main task, while it runs

    def take(self, run_id: int, name: str) -> None:
        """Raises :class:`~kbench.store.RunBusyError` if the run's owner is alive."""
        self.db.claim_run(run_id)
        self.run_id, self.name = run_id, name
        self._thread = threading.Thread(target=self._beat, name="kbench-heartbeat",
                                        daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        from kbench.store._owners import HEARTBEAT_S

        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.db.heartbeat(self.run_id)  # type: ignore[arg-type]
            except Exception as e:  # noqa: BLE001 - a missed beat is retried; the run goes on
                _log.warning("run %s: heartbeat not written: %s", self.name, e)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.run_id is not None:
            try:
                self.db.release_run(self.run_id)
            except Exception as e:  # noqa: BLE001 - a stale owner row is taken over later
                _log.warning("run %s: ownership not released: %s", self.name, e)


# Signals that end a run as Ctrl-C does (SIGKILL cannot be caught: a run killed so stays
# "running" with an owner that is gone, which `runs list` shows as stale and --resume takes).
_SIGNAL_NAMES = {sig: name for name in ("SIGTERM", "SIGHUP")
                 if (sig := getattr(signal, name, None)) is not None}


def execute(overrides: dict[str, Any], config_path: Path | None, name: str | None,
            resume: str | None, device_of: Callable[[str | None], str], console: Console) -> None:
    """Validate everything that can be validated before any call, then run.

    Ctrl-C, SIGTERM and SIGHUP end the run alike: sandbox children are killed, the run this
    process created or resumed (never another) is marked ``interrupted`` and the line to
    resume it is printed; the exit status is 130 (SIGINT) or 128 + the signal's number."""
    cfg, db, rec = _resolve(overrides, config_path, resume, overrides.get("store"), name)
    lease = _Lease(db)
    if rec is not None:  # before anything slow: another process may be working on it
        lease.take(rec.id, rec.name)
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if received:
            return  # the first one is being handled
        received.append(signum)
        task = lease.task
        if task is not None and not task.done():  # the run: cancelled as Ctrl-C cancels it
            task.get_loop().call_soon_threadsafe(task.cancel)
            return
        raise KeyboardInterrupt  # before or after the run (its final selection)

    caught: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in _SIGNAL_NAMES:
            caught[sig] = signal.signal(sig, on_signal)
    try:
        _execute(cfg, db, rec, lease, name, device_of, console, received)
    except KeyboardInterrupt:
        if received:
            raise SystemExit(128 + received[0]) from None
        raise
    finally:
        for sig, old in caught.items():
            signal.signal(sig, old)
        lease.close()


def _interrupted(db: Store, lease: _Lease, received: list[int], console: Console,
                 where: str = "") -> None:
    """After Ctrl-C or a signal: kill the sandbox's children and mark this process's own
    run interrupted (nothing if it was not created yet), saying how to continue."""
    from sandbox._process import kill_all

    kill_all()
    how = (f"{_SIGNAL_NAMES.get(received[0], 'signal')} received" if received
           else "interrupted")
    if lease.run_id is None:
        line = f"{how}{where} before the run was created: nothing was stored"
    else:
        r = db.get_run(lease.name) if lease.name else None
        if r is not None and r.id == lease.run_id and r.status.value == "running":
            db.set_run_status(lease.run_id, "interrupted")
        line = (f"{how}{where}: every finished verdict is stored; continue with "
                f"`kbench run --resume {lease.name}`")
    try:
        console.print(line, highlight=False, soft_wrap=True)
    except (OSError, ValueError):  # SIGHUP: the terminal may be gone
        pass


def _execute(cfg: RunConfig, db: Store, rec: RunRecord | None, lease: _Lease, name: str | None,
             device_of: Callable[[str | None], str], console: Console,
             received: list[int]) -> None:
    from agents import make_provider, price_table, require_price
    from kbench.problems import load_report
    from kbench.runner import Runner, build_executor, check_budget, check_tune

    if not cfg.model:
        raise ConfigError("--model is required, e.g. openai/gpt-4o, anthropic/claude-sonnet-4-5, "
                          "replay:PATH, or a model name with --base-url")
    if not cfg.problems:
        raise ConfigError("--problems is required, e.g. --problems level1 (see `kbench problems list`)")
    check_budget(cfg)
    specs, failures = load_report(cfg.problems)
    if failures:
        more = f" (and {len(failures) - 1} more; see `kbench problems list`)" if failures[1:] else ""
        raise ProblemError(f"{failures[0].path}: {failures[0].error}{more}")
    device = device_of(cfg.device)
    check_tune(cfg, device)
    if cfg.executor == "local":  # the sandbox's warm server starts while the models are asked
        from sandbox.backends import prepare

        prepare(device)
    # the built-in table with kbench.toml's [prices] over it (validated when it was loaded)
    prices = price_table(cfg.prices) if cfg.prices else None
    providers = [make_provider(m, cfg.base_url, prices=prices,
                               concurrency=cfg.concurrency) for m in cfg.model]
    warn = Console(stderr=True)
    for w in [w for p in providers for w in getattr(p, "warnings", ())]:  # e.g. replay files
        warn.print(f"warning: {w}", style="yellow", highlight=False, markup=False,
                   soft_wrap=True)
    if cfg.max_cost_usd is not None:
        for p in providers:
            require_price(p)

    async def go() -> Runner:
        lease.task = asyncio.current_task()
        for p in providers:  # bad key, unknown model, unreachable server: one line, no run
            await p.check()
        # an executor that cannot start (a Ray cluster out of reach): one line, no run
        executor = build_executor(cfg, device)
        if rec is None:
            run_name = name or f"{cfg.model[0].split('/')[-1].replace(':', '-')}-" \
                               f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
            run_id = db.create_run(run_name, model=cfg.model_label, strategy=cfg.strategy,
                                   config=cfg.model_dump())
            lease.take(run_id, run_name)
        else:
            run_name, run_id = rec.name, rec.id
            db.set_run_status(run_id, "running")
        runner = Runner(db, providers, specs, cfg, device, run_id, executor=executor)
        runner.name = run_name  # type: ignore[attr-defined]
        if not console.is_terminal:
            # Piped: no live redraws, the final view once. (rich's Live leaves its last
            # frame without a newline there, so the summary's title ran into the last row.)
            try:
                await runner.run()
            finally:
                console.print(_view(runner, run_name))
            return runner
        with Live(_view(runner, run_name), console=console, refresh_per_second=4,
                  transient=False) as live:
            runner.on_change = lambda: live.update(_view(runner, run_name))
            try:
                await runner.run()
            finally:
                live.update(_view(runner, run_name))
        return runner

    try:
        runner = asyncio.run(go())
    except (KeyboardInterrupt, asyncio.CancelledError):
        _interrupted(db, lease, received, console)
        raise KeyboardInterrupt from None
    except Exception:
        if received:  # what the signal cut short failed instead (SIGHUP: the terminal gone)
            _interrupted(db, lease, received, console)
            raise KeyboardInterrupt from None
        raise
    finally:
        lease.task = None
    run_id = runner.run_id
    status = "failed" if runner.agent.fatal_error else "finished"
    try:
        if status == "finished":
            final_selection(db, run_id, specs, device, console, timing=cfg.timing,
                            allow_libraries=tuple(cfg.allow_libraries))
            confirm_winners(db, run_id, specs, device, console, timing=cfg.timing,
                            allow_libraries=tuple(cfg.allow_libraries))
        db.set_run_status(run_id, status)
    except KeyboardInterrupt:
        _interrupted(db, lease, received, console, " in the final selection")
        raise
    console.line()
    console.print(summary_table(db, run_id, runner.name))  # type: ignore[attr-defined]
    for key, error in call_errors(db, run_id).items():
        console.print(f"{key}: no candidate, the model call failed: {error}", style="yellow",
                      highlight=False, markup=False, soft_wrap=True)
    if runner.stop_reason:
        console.print(f"stopped early: {runner.stop_reason}", style="yellow")
    if runner.agent.fatal_error:
        raise ConfigError(runner.agent.fatal_error)


def call_errors(db: Store, run_id: int, width: int = 200) -> dict[str, str]:
    """For each problem of the run with no verdict at all whose latest LLM call failed, that
    call's error as stored (scrubbed of secrets when it was written, and again here), on one
    line of at most ``width`` characters."""
    from agents.redact import redact

    judged = {k for k, v in db.results(run_id) if v is not None}
    latest: dict[int, str | None] = {}
    for c in db.llm_calls_for(run_id):  # oldest first: the latest call of each problem wins
        if c.problem_id is not None:
            latest[c.problem_id] = c.error
    out: dict[str, str] = {}
    for pid, error in latest.items():
        p = db.get_problem(pid)
        key = p.key if p is not None else str(pid)
        if not error or key in judged:
            continue
        line = " ".join(redact(error).split())
        out[key] = line if len(line) <= width else line[:width - 1] + "…"
    return out


# -- final selection (issue 10) ------------------------------------------------------------

#: ``measure_for(spec, sources, device) -> measure(candidate_id, round) -> ms``: how the
#: final selection times one problem's finalists; None: a full verification per timing.
MeasureFor = Callable[[Any, dict[int, str], str], Callable[[int, int], float]]


def final_selection(db: Store, run_id: int, specs: list[Any], device: str, console: Console, *,
                    timing: bool = True, k: int = 3, rounds: int = 5,
                    allow_libraries: tuple[str, ...] = (),
                    measure_for: MeasureFor | None = None) -> dict[str, Any]:
    """After a run: for each problem with at least two correct, timed candidates, re-time
    its ``k`` finalists interleaved over ``rounds`` rounds and store the winner
    (:func:`kbench.selection.select`, :meth:`Store.put_selection`). Until then a problem's
    best is provisional. A problem whose stored selection already has the same finalists
    (a resumed run with nothing new) is not timed again.

    Skipped, with one line saying why, without CUDA or with timing off: there is nothing to
    re-time. ``measure_for`` replaces the measurement (the seam tests use); by default each
    timing is a full verification under :data:`kbench.selection.RETIME_LIMITS`.

    Returns the selections made, by problem key (as ``Selection.to_dict()``)."""
    from kbench.selection import finalists, select, verify_measure

    if not device.startswith("cuda"):
        console.print(f"final selection skipped: no timing on {device} (timing exists only on "
                      "a CUDA GPU); each problem's best stays provisional", highlight=False)
        return {}
    if not timing:
        console.print("final selection skipped: timing is off (--no-timing); each problem's "
                      "best stays provisional", highlight=False)
        return {}
    stored = db.selections_for(run_id)
    made: dict[str, Any] = {}
    for spec in specs:
        cands = db.candidates_for(run_id, spec.key)
        verdicts = {c.id: c.verdict.payload if c.verdict else None for c in cands}
        ids = finalists(verdicts, k)
        if len(ids) < 2:
            continue
        old = stored.get(spec.key)
        if old is not None and old.payload.get("finalists") == ids:
            continue
        sources = {c.id: c.source for c in cands if c.id in ids}
        measure = (measure_for(spec, sources, device) if measure_for is not None else
                   verify_measure(spec, sources, device=device, cache=db,
                                  allow_libraries=allow_libraries))
        sel = select(spec, verdicts, sources, device=device, k=k, rounds=rounds,
                     measure=measure)
        if sel is None:
            continue
        by_id = {c.id: c for c in cands}
        w = by_id.get(sel.winner)
        fph = w.verdict.fingerprint_hash if w is not None and w.verdict else None
        payload = {**sel.to_dict(), "finalists": ids}
        db.put_selection(run_id, spec.key, payload, fph)
        made[spec.key] = payload
        console.print(f"final selection {spec.key}: "
                      + (f"#{sel.winner}" if sel.winner is not None else "none")
                      + f" — {sel.reason}", highlight=False, soft_wrap=True)
    return made


ConfirmFor = Callable[[Any, str, str], dict[str, Any]]


def confirm_winners(db: Store, run_id: int, specs: list[Any], device: str, console: Console, *,
                    timing: bool = True, allow_libraries: tuple[str, ...] = (),
                    confirm_for: ConfirmFor | None = None) -> dict[str, Any]:
    """After the final selection: each problem's winner (the selection's, else its only
    correct timed candidate) has its time confirmed from outside its process
    (:mod:`sandbox.confirm`: Nsight Compute's kernel durations against the CUDA events the
    child reported), stored in the selection's payload as ``confirmation`` and printed; a
    disagreement is printed as a warning line. A winner already confirmed is not measured
    again. Skipped off CUDA and with timing off (nothing was timed). ``confirm_for(spec,
    source, device)`` replaces the measurement (the seam tests use).

    Returns the confirmations made, by problem key."""
    from kbench.selection import finalists

    if not device.startswith("cuda") or not timing:
        return {}
    if confirm_for is None:
        from sandbox.confirm import confirm_timing

        def confirm_for(spec: Any, source: str, device: str) -> dict[str, Any]:
            return confirm_timing(spec, source, device=device, cache=db,
                                  allow_libraries=allow_libraries)
    stored = db.selections_for(run_id)
    made: dict[str, Any] = {}
    for spec in specs:
        cands = {c.id: c for c in db.candidates_for(run_id, spec.key)}
        sel = stored.get(spec.key)
        if sel is not None and sel.winner_id is not None:
            winner, payload, fph = sel.winner_id, dict(sel.payload), sel.fingerprint_hash
        else:
            ids = finalists({i: c.verdict.payload if c.verdict else None
                             for i, c in cands.items()}, 1)
            if not ids:
                continue
            winner = ids[0]
            fph = cands[winner].verdict.fingerprint_hash if cands[winner].verdict else None
            payload = {"winner": winner, "decision": "only", "finalists": ids,
                       "reason": f"#{winner} is the only correct, timed candidate (not re-timed)"}
        old = payload.get("confirmation") or {}
        if old.get("candidate") == winner or winner not in cands:
            continue
        conf = {**confirm_for(spec, cands[winner].source, device), "candidate": winner}
        payload["confirmation"] = conf
        db.put_selection(run_id, spec.key, payload, fph)
        made[spec.key] = conf
        style = "yellow" if conf.get("agrees") is False else None
        console.print(f"timing of {spec.key} #{winner}: {conf.get('reason', '')}",
                      style=style, highlight=False, soft_wrap=True)
    return made


def _view(runner: Any, run_name: str) -> Group:
    t = Table(show_edge=False, title=None)
    for col in ("problem", "attempts", "status", "best × eager", "cost $"):
        t.add_column(col, justify="left" if col in ("problem", "status") else "right")
    for st in runner.states.values():
        style = "green" if st.correct else ""
        t.add_row(st.key, str(st.attempts), st.status, _fmt(st.best_speedup, ".2f", "x"),
                  f"{st.cost_usd:.3f}", style=style)
    sp = runner.spend
    head = Text(f"run {run_name}  model {runner.cfg.model_label}  calls {sp.completions} "
                f"({sp.failed} failed)  tokens {sp.input_tokens}+{sp.output_tokens}  "
                f"cost ${sp.cost_usd:.3f}  elapsed {time.monotonic() - runner.t0:.0f}s")
    bandit = getattr(getattr(runner, "agent", None), "bandit", None)
    if bandit is None:
        return Group(head, t)
    # Several models: what each was asked, what its judged replies improved, at what cost,
    # best improvement per dollar first.
    m = Table(show_edge=False, title=None)
    for col in ("model", "calls", "judged", "improvement", "cost $", "improvement / $"):
        m.add_column(col, justify="left" if col == "model" else "right")
    for a in sorted(bandit.arms, key=lambda a: -a.rate):  # (not bandit.ranking: no draws)
        m.add_row(a.name, str(a.started), str(a.settled), f"{a.gain:.2f}", f"{a.cost:.3f}",
                  f"{a.rate:.1f}" if a.settled else "-")
    return Group(head, t, m)


def summary_table(db: Store, run_id: int, run_name: str) -> Table:
    rows = db.results(run_id)
    s = summary(rows)
    calls = db.llm_calls_for(run_id)
    cost = sum(c.cost_usd or 0.0 for c in calls)
    t = Table(title=f"run {run_name}: {s.n_correct}/{s.n_problems} correct, "
                    f"{len(calls)} LLM calls, ${cost:.3f}", show_edge=False)
    t.add_column("baseline")
    for p in (0, 1, 1.5, 2):
        t.add_column(f"fast_{p:g}", justify="right")
    t.add_column("geomean ×", justify="right")
    from kbench.report._data import UNTIMED_NOTE, shown_fast, untimed

    for base, label in (("eager", "eager"), ("compile", "torch.compile")):
        t.add_row(label, *[_fmt(shown_fast(s, p, base), ".3f") for p in (0, 1, 1.5, 2)],
                  _fmt(getattr(s, f"geomean_speedup_{base}"), ".2f"))
    if untimed(s):
        t.caption = f"no timing (no GPU): {UNTIMED_NOTE}"
    return t


def list_runs(db_url: str | None, as_json: bool, console: Console) -> None:
    """Every run in the store (``db_url``, else as :func:`store_url` finds it). A run marked
    running whose process is gone (killed outright) is shown as stale."""
    db_url = store_url(db_url)
    missing = _missing_store(db_url)
    if missing is not None:  # reading never creates a store
        if as_json:
            print(json.dumps([]))
        else:
            console.print(f"no runs yet (no store at {missing})", highlight=False, soft_wrap=True)
        return
    from kbench.report._data import UNTIMED_NOTE, shown_fast

    db = Store(db_url, read_only=True)  # a store on a read-only disk can be listed
    runs = db.list_runs()
    data = []
    for r in runs:
        s = summary(db.results(r.id))
        cost = sum(c.cost_usd or 0.0 for c in db.llm_calls_for(r.id))
        data.append({"name": r.name, "created": r.created_at.isoformat(), "status": r.status.value,
                     "stale": _stale(db, r), "model": r.model, "strategy": r.strategy,
                     "problems": s.n_problems, "correct": s.n_correct,
                     # None (shown –) where nothing correct was timed: undefined, not 0
                     "fast_1": shown_fast(s, 1.0), "cost_usd": cost})
    if as_json:
        print(json.dumps(data, indent=2))
        return
    t = Table(show_edge=False)
    for col in ("name", "created", "status", "model", "strategy", "problems", "correct",
                "fast_1", "cost $"):
        t.add_column(col)
    for d in data:
        t.add_row(d["name"], d["created"][:19], d["status"] + (" (stale)" if d["stale"] else ""),
                  d["model"] or "", d["strategy"] or "",
                  str(d["problems"]), str(d["correct"]), _fmt(d["fast_1"], ".3f"), f"{d['cost_usd']:.3f}")
    console.print(t if data else "no runs yet")
    if any(d["fast_1"] is None and d["correct"] for d in data):
        console.print(f"fast_1 –: no timing (no GPU); {UNTIMED_NOTE}", style="dim",
                      highlight=False, soft_wrap=True)


def _stale(db: Store, r: RunRecord) -> bool:
    """A run marked running whose process is gone (killed outright): ``--resume`` takes it."""
    if r.status.value != "running":
        return False
    owner = db.run_owner(r.id)
    return owner is not None and not owner.alive()


def show_run(name: str, db_url: str | None, as_json: bool, console: Console, *,
             lineage: bool = False) -> None:
    """One run: each problem's best verdict, whether that best is provisional or the winner
    of the final selection (with its margin), the population of a search run (per problem
    and island: generations, attempts, best candidate, duplicates refused), with ``lineage``
    every attempt's parents, kind, generation and outcome, and the fast_p summary.

    ``--json`` keeps the older keys and adds ``selections`` (by problem), ``provisional``
    (problems whose correct best has no selection), ``population`` and, with ``lineage``,
    ``lineage`` (by problem)."""
    db, r = open_run(name, db_url)
    rows = db.results(r.id)
    sels = db.selections_for(r.id)
    provisional = [k for k, v in rows if v is not None and v.get("status") == "correct"
                   and k not in sels]
    pop, lin = _population(db, r.id)
    failed = call_errors(db, r.id)
    if as_json:
        out = {"run": r.name, "status": r.status.value, "config": r.config,
               "summary": summary(rows).to_dict(), "results": {k: v for k, v in rows},
               "selections": {k: _selection_json(s) for k, s in sels.items()},
               "provisional": provisional, "population": pop, "call_errors": failed}
        if lineage:
            out["lineage"] = lin
        print(json.dumps(out, indent=2, default=str))
        return
    status = r.status.value + (" (stale)" if _stale(db, r) else "")
    t = Table(show_edge=False, title=f"run {r.name} ({status}, {r.model}, {r.strategy})")
    for col in ("problem", "status", "× eager", "× compile", "SOL%", "reason", "best"):
        t.add_column(col)
    for key, v in rows:
        if v is None:
            why = f"call failed: {failed[key]}"[:70] if key in failed else ""
            t.add_row(key, "no candidate", "", "", "", Text(why), "")
            continue
        t.add_row(key, v["status"], _fmt(v.get("speedup_eager")), _fmt(v.get("speedup_compile")),
                  _fmt(v.get("sol_pct"), ".0f"), (v.get("reason") or "").splitlines()[0][:70],
                  _best_cell(sels.get(key), key in provisional))
    console.print(t)
    for key, error in failed.items():
        console.print(f"{key}: no candidate, the model call failed: {error}", style="yellow",
                      highlight=False, markup=False, soft_wrap=True)
    for key, s in sels.items():
        console.print(f"selected {key}: {_selection_line(s)}", highlight=False, soft_wrap=True)
    if provisional:
        console.print("provisional: the best of " + ", ".join(provisional) + " is not "
                      "re-timed against its runners-up yet (final selection needs a CUDA "
                      "GPU and two correct, timed candidates)", highlight=False, soft_wrap=True)
    for table in _population_tables(pop):
        console.print(table)
    if lineage and lin:
        for key, lines in lin.items():
            console.print(f"lineage {key} (candidate ← parents, kind, generation, island, "
                          "outcome)", highlight=False)
            for ln in lines:
                console.print("  " + _lineage_line(ln), highlight=False, soft_wrap=True)
    elif lineage:
        console.print("no lineage: this run's strategy does not record one", highlight=False)
    console.print(summary_table(db, r.id, r.name))


def _selection_json(s: Any) -> dict[str, Any]:
    return {**s.payload, "winner_id": s.winner_id, "decision": s.decision,
            "margin_ms": s.margin_ms, "spread_ms": s.spread_ms, "reason": s.reason,
            "fingerprint_hash": s.fingerprint_hash, "created_at": s.created_at.isoformat()}


def _selection_line(s: Any) -> str:
    who = f"#{s.winner_id}" if s.winner_id is not None else "no winner"
    meds = s.payload.get("median_ms", {})
    iqrs = s.payload.get("iqr_ms", {})
    each = ", ".join(f"#{c} {meds[str(c)]:.4g}±{iqrs.get(str(c), 0.0):.2g} ms"
                     for c in s.payload.get("ranking", ()) if str(c) in meds)
    conf = s.payload.get("confirmation") or {}
    told = f"; {conf['reason']}" if conf.get("reason") else ""
    return f"{who} — {s.reason}" + (f" [{each}]" if each else "") + told


def _best_cell(s: Any, provisional: bool) -> str:
    if provisional:
        return "provisional"
    if s is None:
        return ""
    if s.winner_id is None:
        return "provisional (re-timing failed)"
    if s.decision == "clear" and s.margin_ms is not None:
        return f"#{s.winner_id} selected (+{s.margin_ms:.3g} ms > {s.spread_ms:.3g})"
    if s.decision == "within_spread":
        return f"#{s.winner_id} selected (within spread)"
    return f"#{s.winner_id} selected ({s.decision})"


def _population(db: Store, run_id: int) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Per problem: islands (generations, attempts, best candidate, duplicates refused) and
    the lineage rows, from the store's lineage table (search strategies such as evolve)."""
    rows = db.lineage_for(run_id)
    if not rows:
        return {}, {}
    keys: dict[int, str] = {}
    for rec in rows.values():
        if rec.problem_id not in keys:
            p = db.get_problem(rec.problem_id)
            keys[rec.problem_id] = p.key if p is not None else str(rec.problem_id)
    pop: dict[str, Any] = {}
    lin: dict[str, list[dict[str, Any]]] = {}
    for key in sorted(set(keys.values())):
        cands = {c.id: c for c in db.candidates_for(run_id, key)}
        islands: dict[str, dict[str, Any]] = {}
        lines = lin.setdefault(key, [])
        for rec in rows.values():
            if keys[rec.problem_id] != key:
                continue
            c = cands.get(rec.candidate_id) if rec.candidate_id is not None else None
            v = c.verdict if c is not None else None
            isl = islands.setdefault(str(rec.island if rec.island is not None else "-"), {
                "generations": 0, "attempts": 0, "duplicates": 0, "refused": 0, "correct": 0,
                "best_id": None, "best_speedup": None})
            isl["attempts"] += 1
            if rec.generation is not None:
                isl["generations"] = max(isl["generations"], rec.generation + 1)
            if rec.rejected:
                isl["duplicates" if rec.rejected.startswith("duplicate") else "refused"] += 1
            elif v is not None and v.passed:
                isl["correct"] += 1
                sp = v.speedup_eager
                best = isl["best_speedup"]
                if isl["best_id"] is None or (sp is not None and (best is None or sp > best)):
                    isl["best_id"], isl["best_speedup"] = c.id, sp
            outcome = ("refused: " + rec.rejected if rec.rejected else
                       "no code" if c is None else "unverified" if v is None else
                       v.status.value + (f" {v.speedup_eager:.2f}x"
                                         if v.speedup_eager is not None else ""))
            lines.append({"candidate_id": rec.candidate_id, "parent_ids": list(rec.parent_ids),
                          "kind": rec.kind, "generation": rec.generation, "island": rec.island,
                          "model": rec.model, "outcome": outcome})
        pop[key] = {"islands": islands}
    return pop, lin


def _population_tables(pop: dict[str, Any]) -> list[Table]:
    out = []
    for key, p in pop.items():
        islands = sorted(p["islands"].items())
        other = any(d["refused"] for _, d in islands)  # only evolve's duplicates, so far
        t = Table(show_edge=False, title=f"population of {key}",
                  caption="duplicates: refused before verification (same normalised code)")
        for col in ("island", "generations", "attempts", "correct", "best", "duplicates",
                    *(["other refused"] if other else [])):
            t.add_column(col, justify="left" if col == "best" else "right", no_wrap=True)
        for isl, d in islands:
            best = ("–" if d["best_id"] is None else
                    f"#{d['best_id']} {_fmt(d['best_speedup'], '.2f', 'x')}")
            t.add_row(isl, str(d["generations"]), str(d["attempts"]), str(d["correct"]),
                      best, str(d["duplicates"]), *([str(d["refused"])] if other else []))
        out.append(t)
    return out


def _lineage_line(d: dict[str, Any]) -> str:
    who = f"#{d['candidate_id']}" if d["candidate_id"] is not None else "(no code)"
    parents = ",".join(f"#{p}" for p in d["parent_ids"]) or "–"
    gen = "-" if d["generation"] is None else d["generation"]
    isl = "-" if d["island"] is None else d["island"]
    return f"{who} ← {parents}  {d['kind'] or '-'}  g{gen} i{isl}  {d['outcome']}"
