"""The report's data layer: runs read from the store, scored per suite, grouped by device.

Speedups measured on different devices are not comparable, so every run carries the
device fingerprint its verdicts were measured on and :class:`Report` groups runs by it;
the terminal and HTML views show one leaderboard per group and say so.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kbench.errors import ConfigError
from kbench.scoring import Summary, summary
from kbench.store import (
    CandidateRecord,
    LineageRecord,
    RunRecord,
    Store,
    TunedConfigRecord,
    chosen_candidate,
)

__all__ = ["Costs", "ProblemEntry", "RunReport", "DeviceGroup", "Report", "build_report",
           "fingerprint_label", "shown_fast", "untimed"]

ALL = "all"  # the suite name of a run's row over every selected problem
UNTIMED_NOTE = "fast_p for p > 0 is undefined without timing (shown as –, null in --json)"


def untimed(sm: Summary) -> bool:
    """Correct verdicts, none of them timed (a CPU run): fast_p for p > 0 says nothing."""
    return sm.n_timed == 0 and sm.n_correct > 0


def shown_fast(sm: Summary, p: float, baseline: str = "eager") -> float | None:
    """fast_p as the report shows it: None where it is undefined, i.e. over no problem at
    all, or for p > 0 where correct verdicts exist but none was timed (no GPU). A run whose
    verdicts are all failures keeps its 0.0: nothing correct is nothing fast."""
    if sm.n_problems == 0 or (p > 0 and untimed(sm)):
        return None
    return sm.fast(p, baseline)  # type: ignore[arg-type]


def _suite_json(sm: Summary) -> dict[str, Any]:
    d = sm.to_dict()
    d["fast_p"] = {b: {f"fast_{p:g}": shown_fast(sm, p, b) for p in ps}
                   for b, ps in (("eager", sm.fast_eager), ("compile", sm.fast_compile))}
    return d


@dataclass(frozen=True)
class Costs:
    """What one run (or one suite of it) spent: LLM dollars and tokens, GPU time, and how
    many candidates the verifier rejected (cheating, impossible timings, static policy)."""

    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    gpu_minutes: float = 0.0
    candidates: int = 0
    rejected: int = 0

    def __add__(self, o: Costs) -> Costs:
        return Costs(self.cost_usd + o.cost_usd, self.input_tokens + o.input_tokens,
                     self.output_tokens + o.output_tokens, self.gpu_minutes + o.gpu_minutes,
                     self.candidates + o.candidates, self.rejected + o.rejected)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        return {"cost_usd": self.cost_usd, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "tokens": self.tokens,
                "gpu_minutes": self.gpu_minutes, "candidates": self.candidates,
                "rejected": self.rejected}


@dataclass(frozen=True)
class ProblemEntry:
    """One problem of one run: its best verdict (payload) and the candidate behind it, every
    attempt (oldest first), the winner's tuned configurations and the run's lineage rows."""

    key: str
    suite: str
    best: dict[str, Any] | None
    winner: CandidateRecord | None
    attempts: tuple[CandidateRecord, ...]
    tuned: tuple[TunedConfigRecord, ...]
    lineage: tuple[LineageRecord, ...]
    costs: Costs


@dataclass(frozen=True)
class RunReport:
    """One run's scores: per suite and over all its selected problems (``suites["all"]``)."""

    run: RunRecord
    fingerprint_hash: str  # "none" (no verdict) or hashes joined by "+" (mixed devices)
    fingerprint: dict[str, Any]
    suites: dict[str, Summary]
    costs: dict[str, Costs]
    problems: dict[str, ProblemEntry]

    @property
    def mixed(self) -> bool:
        return "+" in self.fingerprint_hash

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run.name, "model": self.run.model, "strategy": self.run.strategy,
            "status": self.run.status.value, "fingerprint_hash": self.fingerprint_hash,
            "fingerprint": self.fingerprint, "mixed_devices": self.mixed,
            "suites": {s: {**_suite_json(sm), **self.costs[s].to_dict()}
                       for s, sm in self.suites.items()},
            "problems": {k: _problem_json(p) for k, p in self.problems.items()},
        }


@dataclass(frozen=True)
class DeviceGroup:
    """Runs measured on one device fingerprint: only these are compared with each other."""

    fingerprint_hash: str
    fingerprint: dict[str, Any]
    runs: tuple[RunReport, ...]

    @property
    def label(self) -> str:
        return fingerprint_label(self.fingerprint_hash, self.fingerprint)


@dataclass(frozen=True)
class Report:
    groups: tuple[DeviceGroup, ...]
    store_url: str
    filters: dict[str, Any] = field(default_factory=dict)

    @property
    def runs(self) -> list[RunReport]:
        return [r for g in self.groups for r in g.runs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store_url, "filters": self.filters,
            "device_groups": [{"fingerprint_hash": g.fingerprint_hash,
                               "fingerprint": g.fingerprint, "label": g.label,
                               "runs": [r.run.name for r in g.runs]} for g in self.groups],
            "separate_devices": len(self.groups) > 1,
            "runs": [r.to_dict() for r in self.runs],
        }


def fingerprint_label(fp_hash: str, fp: dict[str, Any]) -> str:
    """A one-line description of a device fingerprint, e.g. ``77bd6a47 device=cpu torch=...``."""
    if fp_hash == "none":
        return "no verdicts (no device)"
    parts = [f"{k}={v}" for k, v in fp.items() if k != "protocol" and not isinstance(v, dict)]
    head = " + ".join(h[:8] for h in fp_hash.split("+"))
    mixed = " (MIXED devices within one run)" if "+" in fp_hash else ""
    return f"{head} {' '.join(parts)}{mixed}".strip()


def _problem_json(p: ProblemEntry) -> dict[str, Any]:
    b = p.best or {}
    return {"suite": p.suite, "status": b.get("status"), "reason": b.get("reason"),
            "speedup_eager": b.get("speedup_eager"), "speedup_compile": b.get("speedup_compile"),
            "sol_pct": b.get("sol_pct"),
            "winner_candidate_id": p.winner.id if p.winner is not None else None,
            "attempts": len(p.attempts), **p.costs.to_dict()}


def _split(s: str | Sequence[str] | None) -> list[str]:
    if s is None:
        return []
    items = [s] if isinstance(s, str) else list(s)
    return [x.strip() for it in items for x in it.split(",") if x.strip()]


def _selected(key: str, suite: str, problems: list[str], suites: list[str]) -> bool:
    if problems and not any(fnmatch.fnmatchcase(key, pat) for pat in problems):
        return False
    return not suites or suite in suites


def _suite_of(db: Store, key: str, cands: list[CandidateRecord], cache: dict[int, str]) -> str:
    for c in cands:
        if c.problem_id not in cache:
            p = db.get_problem(c.problem_id)
            cache[c.problem_id] = (p.suite if p is not None and p.suite else "") or ""
        if cache[c.problem_id]:
            return cache[c.problem_id]
    return key.split("/")[0] if "/" in key else "-"


def _key_of(db: Store, problem_id: int, cache: dict[int, str | None]) -> str | None:
    if problem_id not in cache:
        p = db.get_problem(problem_id)
        cache[problem_id] = None if p is None else p.key
    return cache[problem_id]


def _gpu_minutes(db: Store, cands: Sequence[CandidateRecord]) -> float:
    """Wall time of every CUDA verdict of ``cands``: a candidate verified again (resumed,
    re-timed) spent GPU time each time, not only for its latest verdict."""
    secs = 0.0
    for c in cands:
        if c.verdict is None:
            continue
        for v in db.verdicts_for_candidate(c.id):
            if str(v.payload.get("device", "")).startswith("cuda"):
                secs += float(v.payload.get("wall_s") or 0.0)
    return secs / 60.0


def _run_report(db: Store, run: RunRecord, problems: list[str], suites: list[str],
                suite_cache: dict[int, str]) -> tuple[RunReport, dict[str, str]]:
    """The run's report over the selected problems, and every problem of the run (key ->
    suite), selected or not."""
    from kbench.tuning import source_hash

    rows = db.results(run.id)
    sels = db.selections_for(run.id)
    calls = db.llm_calls_for(run.id)
    lineage = list(db.lineage_for(run.id).values())
    fps: Counter[str] = Counter()
    fp_dicts: dict[str, dict[str, Any]] = {}
    problem_cache: dict[int, str | None] = {}
    entries: dict[str, ProblemEntry] = {}
    available: dict[str, str] = {}
    for key, best in rows:
        cands = db.candidates_for(run.id, key)
        suite = _suite_of(db, key, cands, suite_cache)
        available[key] = suite
        if not _selected(key, suite, problems, suites):
            continue
        verdicted = [c for c in cands if c.verdict is not None]
        sel = sels.get(key)
        winner = chosen_candidate(verdicted, sel.winner_id if sel is not None else None)[0]
        for c in verdicted:
            fps[c.verdict.fingerprint_hash] += 1  # type: ignore[union-attr]
            fp_dicts.setdefault(c.verdict.fingerprint_hash,  # type: ignore[union-attr]
                                dict(c.verdict.payload.get("fingerprint") or {}))  # type: ignore[union-attr]
        mine = [c for c in calls if c.problem_id is not None
                and _key_of(db, c.problem_id, problem_cache) == key]
        costs = Costs(
            cost_usd=sum(c.cost_usd or 0.0 for c in mine),
            input_tokens=sum(c.input_tokens or 0 for c in mine),
            output_tokens=sum(c.output_tokens or 0 for c in mine),
            gpu_minutes=_gpu_minutes(db, cands), candidates=len(cands),
            rejected=sum(c.verdict is not None and c.verdict.status.value == "rejected"
                         for c in cands))
        tuned = tuple(db.tuned_configs(problem_key=key, source_hash=source_hash(winner.source))
                      ) if winner is not None else ()
        entries[key] = ProblemEntry(key, suite, best, winner, tuple(cands), tuned,
                                    tuple(r for r in lineage
                                          if _key_of(db, r.problem_id, problem_cache) == key), costs)
    by_suite: dict[str, dict[str, Any]] = {}
    for k, e in entries.items():
        by_suite.setdefault(e.suite, {})[k] = e.best
    sums = {s: summary(res) for s, res in sorted(by_suite.items())}
    sums[ALL] = summary({k: e.best for k, e in entries.items()})
    costs: dict[str, Costs] = {}
    for e in entries.values():
        costs[e.suite] = costs.get(e.suite, Costs()) + e.costs
    costs = {s: costs.get(s, Costs()) for s in sums}
    costs[ALL] = sum((e.costs for e in entries.values()), Costs())
    if fps:
        fp_hash = "+".join(sorted(fps))
        fp = fp_dicts[fps.most_common(1)[0][0]] if len(fps) == 1 else {
            h: fp_dicts[h] for h in sorted(fps)}
    else:
        fp_hash, fp = "none", {}
    return RunReport(run, fp_hash, fp, sums, costs, entries), available


def _listed(items: Sequence[str], most: int = 6) -> str:
    items = sorted(items)
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


def _no_match(problems: list[str], suites: list[str], where: str,
              available: dict[str, str]) -> ConfigError:
    """The error for filters that select nothing: what they were and what there is."""
    flags = " ".join(f for f in (problems and f"--problems {','.join(problems)}",
                                 suites and f"--suite {','.join(suites)}") if f)
    if not available:
        return ConfigError(f"{flags} selects nothing: {where} has no problems")
    return ConfigError(f"{flags} matches no problem of {where} (suites: "
                       f"{_listed(set(available.values()))}; problems: "
                       f"{_listed(list(available))}); drop or change the filter")


def build_report(db_url: str | None, runs: Sequence[str] = (),
                 problems: str | Sequence[str] | None = None,
                 suites: str | Sequence[str] | None = None) -> Report:
    """Reads the named runs (default: every run) from the store and scores them.

    Args:
        db_url: Store URL or SQLite path (``None``: ``$KBENCH_STORE`` or ``kbench.db``).
        runs: Run names; unknown names raise :class:`ConfigError`.
        problems: Problem keys or shell patterns (``level1/*``), comma-separated or a list.
        suites: Suite names, comma-separated or a list.

    With filters, runs that hold no selected problem are left out; a named run holding
    none, or filters selecting nothing in any run, is an error.

    Raises:
        ConfigError: No store, no runs in it, a named run that does not exist, or filters
            that select no problem (the message lists the suites and problems there are).
    """
    from kbench.runflow import _missing_store

    missing = _missing_store(db_url)
    if missing is not None:  # reading never creates a store
        raise ConfigError(f"no runs to report: no store at {missing}")
    db = Store(db_url, read_only=True)  # a report never writes
    if runs:
        recs = []
        for name in runs:
            r = db.get_run(name)
            if r is None:
                raise ConfigError(f"no run named {name!r} in {db.url}; see `kbench runs list`")
            recs.append(r)
    else:
        recs = db.list_runs()
        if not recs:
            raise ConfigError(f"no runs in the store {db.url}; start one with `kbench run`")
    pats, sts = _split(problems), _split(suites)
    cache: dict[int, str] = {}
    pairs = [_run_report(db, r, pats, sts, cache) for r in recs]
    if pats or sts:
        for rr, available in pairs:
            if runs and not rr.problems:
                raise _no_match(pats, sts, f"run {rr.run.name!r}", available)
        if not any(rr.problems for rr, _ in pairs):
            every = {k: v for _, available in pairs for k, v in available.items()}
            raise _no_match(pats, sts, "any run in the store", every)
        pairs = [(rr, a) for rr, a in pairs if rr.problems]
    reports = [rr for rr, _ in pairs]
    groups: dict[str, list[RunReport]] = {}
    for rr in reports:
        groups.setdefault(rr.fingerprint_hash, []).append(rr)
    out = tuple(DeviceGroup(h, rs[0].fingerprint, tuple(rs)) for h, rs in groups.items())
    return Report(out, str(db.url), {"runs": list(runs), "problems": pats, "suites": sts})
