"""Optuna over a candidate's knobs, each trial a real verification, the study in the run's DB.

A trial verifies the candidate with one configuration on the primary shape first (``main``
where tuned, else the first shape): the candidate's median time there is the objective and
is reported as the trial's first intermediate value, so a configuration clearly slower than
the best one finished so far is pruned before the other shapes cost anything. The remaining
shapes are then verified and timed in one more call. A configuration that does not compile,
runs out of resources, times out or is wrong is a FAILED trial with the verifier's status
and reason in its user attributes, never a value. A configuration the study has already
evaluated is answered from that trial (``repeat_of``) without verifying again.

At the end, for each shape, the fastest completed configuration that passes a full
re-verification (every shape, derived ones included) is stored with
:meth:`kbench.store.Store.put_tuned_config`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from kbench.errors import ConfigError
from kbench.tuning._space import apply, defaults, lift_notes, space
from sandbox.problem import ProblemSpec

__all__ = ["SAMPLERS", "GPU_NEEDED", "BestConfig", "LosingPruner", "TuneResult", "open_storage",
           "tune"]

SAMPLERS = ("tpe", "random", "grid", "cmaes")
GPU_NEEDED = ("tuning needs a CUDA GPU: it minimises measured kernel time, and timing exists "
              "only on CUDA (on CPU the interpreter checks correctness, not speed)")
Objective = Callable[[dict[str, Any], str], float]
_REVERIFY_TRIES = 3  # configurations tried per shape before giving up on storing one


@dataclass(frozen=True)
class BestConfig:
    """The tuned configuration of one shape: knob values, its median time, its trial."""

    shape: str
    knobs: dict[str, Any]
    median_ms: float
    trial: int


@dataclass(frozen=True)
class TuneResult:
    """One :func:`tune` call. Counts are the study's (all calls); ``evaluated`` this call's."""

    study_name: str
    problem: str
    source_hash: str
    fingerprint_hash: str
    trials: int
    evaluated: int
    complete: int
    pruned: int
    failed: int
    best: dict[str, BestConfig]
    default_ms: float | None  # the candidate's own configuration on the primary shape
    notes: tuple[str, ...] = ()


def source_hash(source: str) -> str:
    """The candidate's identity in tuning (its untuned source)."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _key(knobs: dict[str, Any]) -> str:
    return json.dumps(knobs, sort_keys=True)


class _Grid(optuna.samplers.GridSampler):
    """GridSampler for ask-and-tell: its ``after_trial`` calls ``study.stop()`` once the grid
    is exhausted, which only works inside ``optimize``; :func:`tune`'s loop stops itself."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def _sampler(name: str, sp: dict[str, list[Any]], seed: int | None) -> Any:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return _Grid({k: list(range(len(v))) for k, v in sp.items()}, seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ConfigError("--sampler cmaes needs the cmaes package: pip install cmaes") from None
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise ConfigError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}")


def _distributions(sp: dict[str, list[Any]]) -> dict[str, Any]:
    # Each knob is the index of its value: ordered for TPE and CMA-ES (block sizes are
    # ordered), the same grid for GridSampler, and any value type fits an int.
    return {k: IntDistribution(0, len(v) - 1) for k, v in sp.items()}


class LosingPruner(optuna.pruners.BasePruner):
    """Prunes at a step when the trial's value is more than ``ratio`` times the best value a
    finished (complete) trial reported at that step — a clearly losing configuration."""

    def __init__(self, ratio: float = 1.5, n_startup: int = 1) -> None:
        self.ratio, self.n_startup = ratio, n_startup

    def prune(self, study: Any, trial: Any) -> bool:
        step = trial.last_step
        if step is None:
            return False
        done = [t.intermediate_values[step] for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,)) if step in t.intermediate_values]
        return len(done) >= self.n_startup and trial.intermediate_values[step] > self.ratio * min(done)


def _median_ms(verdict: Any, shape: str) -> float | None:
    for s in verdict.shapes:
        if s.name == shape and s.timing is not None:
            return float(s.timing.median_ms)
    return None


@dataclass
class _Ctx:
    spec: ProblemSpec
    source: str
    device: str
    order: list[str]  # primary shape first
    sp: dict[str, list[Any]]
    store: Any
    objective: Objective | None
    limits: Any

    def verify(self, names: Sequence[str] | None, knobs: dict[str, Any], timed: bool) -> Any:
        from sandbox import verify

        src, plain = apply(self.source, knobs)
        spec = self.spec if names is None else self.spec.only(names)
        return verify(spec, src, device=self.device, cache=self.store, timing=timed,
                      knobs=plain or None, limits=self.limits)

    def times(self, verdict: Any, knobs: dict[str, Any], names: Sequence[str]) -> dict[str, float | None]:
        if self.objective is not None:  # test-only: replaces the timing, never correctness
            return {n: float(self.objective(dict(knobs), n)) for n in names}
        return {n: _median_ms(verdict, n) for n in names}


def _evaluate(ctx: _Ctx, study: Any, trial: Any, knobs: dict[str, Any]) -> None:
    trial.set_user_attr("knobs", knobs)
    primary, rest = ctx.order[0], ctx.order[1:]
    steps = [[primary], rest] if rest else [[primary]]
    times: dict[str, float] = {}
    for step, names in enumerate(steps):
        v = ctx.verify(names, knobs, timed=ctx.objective is None)
        if not v.passed:
            trial.set_user_attr("status", v.status.value)
            trial.set_user_attr("reason", f"on {', '.join(names)}: {v.reason}"[:1000])
            study.tell(trial, state=TrialState.FAIL)
            return
        got = ctx.times(v, knobs, names)
        missing = [n for n, ms in got.items() if ms is None or not math.isfinite(ms)]
        if missing:
            trial.set_user_attr("status", "untimed")
            trial.set_user_attr("reason", f"no timing on shape(s) {missing}: {v.reason}"[:1000])
            study.tell(trial, state=TrialState.FAIL)
            return
        times.update({n: float(ms) for n, ms in got.items() if ms is not None})
        trial.set_user_attr("ms", times)
        if step == 0:
            trial.report(times[primary], 0)
            if rest and trial.should_prune():
                trial.set_user_attr("reason", f"pruned on shape {primary!r}: {times[primary]:.4g} "
                                    "ms is clearly slower than the best configuration so far")
                study.tell(trial, state=TrialState.PRUNED)
                return
    study.tell(trial, times[primary])


def _repeat(study: Any, trial: Any, old: Any) -> None:
    for k, v in old.user_attrs.items():
        trial.set_user_attr(k, v)
    trial.set_user_attr("repeat_of", old.number)
    if old.state == TrialState.COMPLETE:
        study.tell(trial, old.value)
        return
    if old.state == TrialState.PRUNED and 0 in old.intermediate_values:
        trial.report(old.intermediate_values[0], 0)
    study.tell(trial, state=old.state)


def _finished(study: Any) -> dict[str, Any]:
    """Evaluated configurations (not repeats) by knob key."""
    out: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                      TrialState.FAIL)):
        if "knobs" in t.user_attrs and "repeat_of" not in t.user_attrs:
            out.setdefault(_key(t.user_attrs["knobs"]), t)
    return out


_OPTUNA_LOCK = 0x6B626F70747561  # "kboptua": the advisory lock creating Optuna's tables
_OPEN_TRIES = 5


def open_storage(store: Any) -> optuna.storages.RDBStorage:
    """Optuna's storage in the database of ``store`` (a :class:`kbench.store.Store`): the
    same SQLite file, or the same PostgreSQL database, as the run's results.

    Optuna creates its tables and version row when a storage first opens a database; runs
    (or one run's GPU workers) opening a new database at once race to do it. On PostgreSQL
    they take turns under an advisory lock; on SQLite the loser of the race (its statement
    failed, so it wrote nothing) opens again and finds them made.

    Raises:
        StoreError: The database refused Optuna's tables (one line, no password).
    """
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    from kbench.errors import StoreError

    url = store.engine.url.render_as_string(hide_password=False)
    postgres = store.engine.dialect.name == "postgresql"
    kwargs: dict[str, Any] = {}
    if postgres:
        kwargs["pool_pre_ping"] = True
        if "connect_timeout" not in store.engine.url.query:  # as the store's own engine
            kwargs["connect_args"] = {"connect_timeout": 10}
    for attempt in range(_OPEN_TRIES):
        try:
            if not postgres:
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            with store.engine.begin() as conn:
                conn.execute(select(func.pg_advisory_xact_lock(_OPTUNA_LOCK)))
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except SQLAlchemyError as e:
            if postgres or attempt == _OPEN_TRIES - 1:
                first = (str(getattr(e, "orig", None) or e).strip().splitlines() or [""])[0]
                raise StoreError(f"store {store.url}: Optuna's storage: {first}") from e
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def _open_study(ctx: _Ctx, storage: Any, study_name: str, sampler: str, seed: int | None,
                prune_ratio: float, attrs: dict[str, Any]) -> Any:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize",
                                sampler=_sampler(sampler, ctx.sp, seed),
                                pruner=LosingPruner(prune_ratio), load_if_exists=True)
    old = study.user_attrs
    if old and old.get("space") != ctx.sp:
        raise ConfigError(f"study {study_name!r} was made for another knob space; name a new "
                          "study (--study) to tune this one")
    if not old:
        for k, v in attrs.items():
            study.set_user_attr(k, v)
        first = {k: ctx.sp[k].index(v) for k, v in defaults(ctx.source).items()}
        if first:  # the candidate's own configuration first: the baseline "tuned" must beat
            study.enqueue_trial(first)
    return study


def tune(
    spec: ProblemSpec,
    source: str,
    *,
    device: str,
    storage_url: str | None,
    study_name: str | None = None,
    n_trials: int = 30,
    sampler: str = "tpe",
    shapes: Sequence[str] | None = None,
    objective: Objective | None = None,
    seed: int | None = None,
    prune_ratio: float = 1.5,
    limits: Any = None,
) -> TuneResult:
    """Search ``source``'s knobs for ``spec`` with Optuna; store the best config per shape.

    Args:
        device: ``cuda``/``cuda:N``. CPU is refused (no timing) unless ``objective`` is given.
        storage_url: The run's store (URL or SQLite path; ``None``: the default store):
            results and Optuna's study both live there, so calling again with the same ``study_name`` resumes the study.
        study_name: Default ``tune:<problem>:<source hash>:<device fingerprint hash>``.
        n_trials: Configurations to evaluate in this call (repeats of an evaluated one are
            answered from it and not counted); stops early once every one is evaluated.
        sampler: ``tpe`` (default), ``random``, ``grid`` or ``cmaes`` (needs ``cmaes``).
        shapes: Shape names to tune (default every shape of ``spec`` on ``device``).
        objective: TEST ONLY — replaces the measured median time with
            ``objective(knobs, shape_name)`` after a real correctness check, so tuning can be
            tested on CPU, which has no timing. The CLI never passes it.
        prune_ratio: A trial is pruned when its primary-shape time exceeds this multiple of
            the best complete trial's.

    Raises:
        ConfigError: No knobs, a bad knob space, an unknown sampler or shape, CPU without
            ``objective``, or a study made for another space.
    """
    from kbench.store import Store
    from sandbox.fingerprint import fingerprint, fingerprint_hash

    sp = space(source)
    if not sp:
        raise ConfigError("the candidate declares no knobs: add a module-level TUNE dict, e.g. "
                          'TUNE = {"BLOCK": [64, 128, 256]}, or literal @triton.autotune configs')
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    if n_trials < 1:
        raise ConfigError(f"--trials must be at least 1, not {n_trials}")
    if not device.startswith("cuda") and objective is None:
        raise ConfigError(GPU_NEEDED)
    every = list(spec.shapes_for(device))
    names = list(shapes) if shapes else every
    unknown = [n for n in names if n not in every]
    if unknown:
        raise ConfigError(f"unknown shape(s) {unknown} of {spec.key} on {device}; "
                          f"it has {', '.join(every)}")
    primary = "main" if "main" in names else names[0]
    order = [primary] + [n for n in names if n != primary]

    store = Store(storage_url)
    storage = None
    try:  # the store and Optuna's engine hold server connections: closed on the way out
        fph = fingerprint_hash(fingerprint(device))
        shash = source_hash(source)
        name = study_name or f"tune:{spec.key}:{shash}:{fph}"
        ctx = _Ctx(spec, source, device, order, sp, store, objective, limits)
        attrs = {"problem": spec.key, "source_hash": shash, "fingerprint_hash": fph, "space": sp,
                 "timing": "measured" if objective is None else "replaced by a test objective"}
        storage = open_storage(store)
        study = _open_study(ctx, storage, name, sampler, seed, prune_ratio, attrs)
        notes = list(lift_notes(source))

        total = math.prod(len(v) for v in sp.values())
        evaluated, asks = 0, 0
        while evaluated < n_trials and asks < 20 * n_trials:
            done = _finished(study)
            if len(done) >= total:
                notes.append(f"every one of the {total} configurations is evaluated")
                break
            trial = study.ask(_distributions(sp))
            asks += 1
            knobs = {k: sp[k][i] for k, i in trial.params.items()}
            old = done.get(_key(knobs))
            if old is not None:
                _repeat(study, trial, old)
                continue
            _evaluate(ctx, study, trial, knobs)
            evaluated += 1

        done = _finished(study)
        best = _store_best(ctx, done, name, shash, fph, notes)
        states = [t.state.name for t in done.values()]
        dflt = defaults(source)
        first = done.get(_key(dflt)) if dflt and len(dflt) == len(sp) else None
        default_ms = (first.user_attrs.get("ms", {}).get(primary)
                      if first is not None and first.state.name == "COMPLETE" else None)
        return TuneResult(
            study_name=name, problem=spec.key, source_hash=shash, fingerprint_hash=fph,
            trials=len(study.trials), evaluated=evaluated, complete=states.count("COMPLETE"),
            pruned=states.count("PRUNED"), failed=states.count("FAIL"), best=best,
            default_ms=default_ms, notes=tuple(notes),
        )
    finally:
        if storage is not None:
            storage.engine.dispose()
        store.close()


def _store_best(ctx: _Ctx, done: dict[str, Any], study_name: str, shash: str, fph: str,
                notes: list[str]) -> dict[str, BestConfig]:
    """Per shape, the fastest complete configuration that passes a full re-verification."""
    complete = [t for t in done.values() if t.state.name == "COMPLETE"]
    verified: dict[str, bool] = {}
    best: dict[str, BestConfig] = {}
    for shape in ctx.order:
        ranked = sorted((t for t in complete if shape in t.user_attrs.get("ms", {})),
                        key=lambda t: (t.user_attrs["ms"][shape], t.number))
        for t in ranked[:_REVERIFY_TRIES]:
            knobs = t.user_attrs["knobs"]
            k = _key(knobs)
            if k not in verified:
                v = ctx.verify(None, knobs, timed=False)
                verified[k] = v.passed
                if not v.passed:
                    notes.append(f"config {k} failed re-verification: {v.status.value}: "
                                 f"{v.reason[:200]}")
            if verified[k]:
                ms = float(t.user_attrs["ms"][shape])
                best[shape] = BestConfig(shape, dict(knobs), ms, t.number)
                ctx.store.put_tuned_config(ctx.spec.key, shash, shape, fph, knobs, ms,
                                           len(done), study_name)
                break
        else:
            notes.append(f"shape {shape!r}: no configuration completed and re-verified")
    return best
