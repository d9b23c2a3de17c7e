"""What ``kbench tune`` tunes: a candidate file for one problem, or the best correct candidate
of each problem of a stored run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kbench.errors import ConfigError, ProblemError
from kbench.tuning._space import space
from sandbox.problem import ProblemSpec

__all__ = ["Target", "targets"]


@dataclass(frozen=True)
class Target:
    label: str  # the file, or "run <name>: candidate <id>"
    spec: ProblemSpec
    source: str


def _one_problem(selector: str) -> ProblemSpec:
    from kbench.problems import load_report

    specs, failures = load_report(selector)
    if len(specs) + len(failures) != 1:
        raise ConfigError(f"--problem {selector!r} matches {len(specs) + len(failures)} "
                          "problems; name exactly one")
    if failures:
        raise ProblemError(f"--problem {failures[0].path}: {failures[0].error}")
    return specs[0]


def _from_file(path: Path, problem: str) -> Target:
    if not path.is_file():
        raise ConfigError(f"candidate {path}: no such file")
    try:
        source = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"candidate {path}: not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"candidate {path}: cannot be read ({e.strerror or e})") from None
    spec = _one_problem(problem)
    space(source)  # a bad knob space is reported before anything else runs
    return Target(str(path), spec, source)


def _from_run(name: str, store_url: str | None) -> tuple[list[Target], list[str]]:
    from kbench.store import Store, chosen_candidate

    store = Store(store_url)
    run = store.get_run(name)
    if run is None:
        raise ConfigError(f"{name!r} is neither a candidate file nor a run in store {store.url}")
    found: list[Target] = []
    skipped: list[str] = []
    selections = store.selections_for(run.id)
    for row in store.results(run.id):
        cands = [c for c in store.candidates_for(run.id, row.problem_key) if c.verdict is not None]
        sel = selections.get(row.problem_key)
        cand = chosen_candidate(cands, sel.winner_id if sel is not None else None)[0]
        if cand is None or not cand.verdict.payload.get("passed"):  # type: ignore[union-attr]
            skipped.append(f"{row.problem_key}: no correct candidate")
            continue
        try:
            sp = space(cand.source)
        except ConfigError as e:
            skipped.append(f"{row.problem_key}: candidate {cand.id}: {e}")
            continue
        if not sp:
            skipped.append(f"{row.problem_key}: candidate {cand.id} declares no knobs")
            continue
        try:
            spec = _one_problem(row.problem_key)
        except (ConfigError, ProblemError) as e:
            skipped.append(f"{row.problem_key}: {e}")
            continue
        found.append(Target(f"run {name}: candidate {cand.id}", spec, cand.source))
    return found, skipped


def targets(target: str, problem: str | None, store_url: str | None
            ) -> tuple[list[Target], list[str]]:
    """The candidates to tune and, for a run, the problems skipped and why.

    Raises:
        ConfigError: A missing or unreadable file, a file without ``--problem``, an unknown
            run, or a candidate file's bad knob space.
    """
    path = Path(target)
    if problem is not None:
        return [_from_file(path, problem)], []
    if path.is_file() or path.suffix == ".py":
        raise ConfigError(f"candidate {path}: name its problem with --problem (or give a run "
                          "name to tune the best candidate of each of its problems)")
    return _from_run(target, store_url)
