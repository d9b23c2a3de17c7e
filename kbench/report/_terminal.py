"""The terminal leaderboard (rich): one table per device fingerprint, one row per run and
suite (and an ``all`` row over a run's suites when it has several)."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kbench.report._data import ALL, UNTIMED_NOTE, DeviceGroup, Report, shown_fast, untimed

__all__ = ["print_report", "leaderboard_table", "costs_table"]

_PS = (0.0, 1.0, 1.5, 2.0)


def _f(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "–" if x is None else f"{x:{spec}}{suffix}"


def leaderboard_table(g: DeviceGroup) -> Table:
    """The scores of one device group, one row per run and suite: fast_0 (correct), then
    fast_p and the geomean speedup as ``eager/compile`` pairs, and mean SOL%."""
    t = Table(title=f"device {escape(g.label)}", box=box.SIMPLE_HEAD, pad_edge=False,
              title_justify="left")
    t.add_column("run", overflow="fold", ratio=1)
    t.add_column("suite", overflow="fold", min_width=6)
    t.add_column("n", justify="right")
    t.add_column("fast_0", justify="right", no_wrap=True)
    for p in _PS[1:]:
        t.add_column(f"fast_{p:g}\ne/c", justify="right", no_wrap=True)
    t.add_column("geomean×\ne/c", justify="right", no_wrap=True)
    t.add_column("SOL%", justify="right", no_wrap=True)
    for r in g.runs:
        suites = [s for s in r.suites if s != ALL] or [ALL]
        if len(suites) > 1:
            suites.append(ALL)
        for i, s in enumerate(suites):
            sm = r.suites[s]
            t.add_row(escape(r.run.name) if i == 0 else "", escape(s), str(sm.n_problems),
                      _f(shown_fast(sm, 0)),
                      *(f"{_f(shown_fast(sm, p))}/{_f(shown_fast(sm, p, 'compile'))}"
                        for p in _PS[1:]),
                      f"{_f(sm.geomean_speedup_eager)}/{_f(sm.geomean_speedup_compile)}",
                      _f(sm.mean_sol_pct, ".0f"), end_section=i == len(suites) - 1)
    return t


def costs_table(g: DeviceGroup) -> Table:
    """What each run of a device group spent, over its selected problems."""
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("run", overflow="fold")
    t.add_column("model", overflow="fold", ratio=1)
    for col in ("cost $", "tokens in/out", "GPU-min", "candidates", "rejected"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in g.runs:
        c = r.costs[ALL]
        t.add_row(escape(r.run.name), escape(r.run.model or ""), f"{c.cost_usd:.3f}",
                  f"{c.input_tokens}/{c.output_tokens}", f"{c.gpu_minutes:.1f}",
                  str(c.candidates), str(c.rejected))
    return t


def print_report(rep: Report, console: Console) -> None:
    """Prints one leaderboard per device fingerprint, with a line when there are several."""
    if len(rep.groups) > 1:
        console.print(f"{len(rep.groups)} device fingerprints: runs measured on different "
                      "devices are shown in separate tables (their speedups are not "
                      "comparable)", highlight=False, soft_wrap=True)
    for g in rep.groups:
        console.print(leaderboard_table(g))
        console.print(costs_table(g))
        names = [r.run.name for r in g.runs if untimed(r.suites[ALL])]
        if names:
            console.print("no timing (no GPU) in " + ", ".join(names) + ": " + UNTIMED_NOTE,
                          style="dim", highlight=False, markup=False, soft_wrap=True)
        for r in g.runs:
            if r.mixed:
                console.print(f"warning: run {r.run.name} has verdicts from several devices",
                              style="yellow", highlight=False, markup=False)
