"""Noise-aware winner selection (issue 10): finalists, interleaved re-timing, the spread rule,
the final-selection phase after a run (timing injected through its ``measure_for`` seam; no
GPU here), and ``kbench runs show`` (provisional vs selected, an evolve run's population and
lineage)."""

from __future__ import annotations

import importlib.resources
import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from kbench import cli
from kbench.problems import load
from kbench.runflow import final_selection, show_run
from kbench.selection import RetimeError, choose, finalists, retime
from kbench.store import Store
from tests.fakes.evolve_script import KeyedProvider, fake_verdict
from tests.test_evolve import DUPLICATES, KEY, SCRIPT, evolve_cfg, run_evolve

EXAMPLES = Path(str(importlib.resources.files("kbench").joinpath("examples")))


@pytest.fixture(scope="module")
def spec():
    return load(KEY)[0]


def ok(speed):
    return {"status": "correct", "speedup_eager": speed}


def src(tag: str, pad: int = 0) -> str:
    body = "".join(f"\nX{i} = {i}" for i in range(pad))
    return f"import torch\nTAG = {tag!r}{body}\n# comments never count\n"


# -- finalists, interleaving, the rule ----------------------------------------------------

def test_finalists_are_the_fastest_correct_timed_ones_earlier_first_on_ties():
    verdicts = {10: ok(1.5), 11: {"status": "incorrect", "speedup_eager": 9.0}, 12: ok(2.0),
                13: ok(None), 14: ok(1.5), 15: None, 16: ok(3.0)}
    assert finalists(verdicts, k=3) == [16, 12, 10]  # 10 before 14: same speed, earlier
    assert finalists(verdicts, k=10) == [16, 12, 10, 14]  # never incorrect or untimed
    assert finalists(list(verdicts.items()), k=2) == [16, 12]


def test_retime_interleaves_one_timing_per_candidate_per_round():
    calls: list[tuple[str, int]] = []

    def measure(cid, rnd):
        calls.append((cid, rnd))
        if cid == "C" and rnd == 1:
            raise RetimeError("incorrect: mismatch on shape main")
        return {"A": 1.0, "B": 2.0, "C": 3.0}[cid] + rnd / 100

    times = retime(None, {"A": "a", "B": "b", "C": "c"}, device="cuda", rounds=3,
                   measure=measure)
    # A B C, A B C(fails), A B: never A A A B B B, and a failed finalist is not timed again
    assert calls == [("A", 0), ("B", 0), ("C", 0), ("A", 1), ("B", 1), ("C", 1),
                     ("A", 2), ("B", 2)]
    assert times == {"A": [1.0, 1.01, 1.02], "B": [2.0, 2.01, 2.02], "C": [3.0]}
    sel = choose(times, ["A", "B", "C"])
    assert "C" not in sel.ranking and sel.winner == "A"  # an unfinished one is left out


def test_a_winner_within_spread_loses_to_the_simpler_then_the_earlier_one():
    # B is 0.02 ms faster by median, but each one's per-round medians spread by 0.05 ms
    times = {1: [1.00, 1.06, 0.96, 1.03, 0.98], 2: [0.98, 1.04, 0.94, 1.01, 0.96]}
    sources = {1: src("A"), 2: src("B", pad=5)}
    sel = choose(times, [1, 2], sources)
    assert sel.ranking == (2, 1)  # 2 is the fastest ...
    assert sel.winner == 1 and sel.decision == "within_spread"  # ... but 1 is simpler
    assert sel.margin_ms == pytest.approx(0.02)
    assert sel.spread_ms == pytest.approx(0.075)  # IQR of [1.00 1.06 0.96 1.03 0.98]
    assert sel.reason.startswith("within spread: #2 is ahead of #1 by 0.02 ms <= spread")
    assert "#1 simpler kept" in sel.reason
    # the same length after normalisation (comments differ only): the earlier one stands
    same = {1: src("B") + "# longer comment, still the same code\n", 2: src("A")}
    assert choose(times, [1, 2], same).winner == 1
    assert "#1 earlier kept" in choose(times, [1, 2], same).reason
    assert choose(times, [2, 1], same).winner == 2  # earlier is by order, not by id


def test_a_clear_winner_wins_with_its_margin_and_reason():
    times = {1: [1.00, 1.01, 0.99, 1.00, 1.02], 2: [0.80, 0.81, 0.79, 0.80, 0.82]}
    sources = {1: src("A"), 2: src("B", pad=20)}  # longer: simplicity never beats speed
    sel = choose(times, [1, 2], sources)
    assert sel.winner == 2 and sel.decision == "clear" and sel.ranking == (2, 1)
    assert sel.median_ms == {1: pytest.approx(1.00), 2: pytest.approx(0.80)}
    assert sel.margin_ms == pytest.approx(0.20)
    assert sel.spread_ms == pytest.approx(0.02)
    assert sel.reason == "#2 beats #1 by 0.2 ms > spread 0.02 ms (5 interleaved rounds)"
    # a third finalist within the winner's spread makes it a tie again
    times[3] = [0.79, 0.83, 0.78, 0.81, 0.80]
    tie = choose(times, [1, 2, 3], {**sources, 3: src("C")})
    assert tie.decision == "within_spread" and tie.winner == 3  # C simpler than B


# -- the phase after a run ----------------------------------------------------------------

def _stored_run(store: Store, spec, speeds: dict[str, float | None], name="r") -> tuple[int, dict]:
    """A run whose candidates (by tag) have fake verdicts at the given speeds."""
    run_id = store.create_run(name, model="fake", strategy="oneshot")
    pid = store.upsert_problem(spec.key, spec.suite, spec.source_hash, spec.source)
    ids = {}
    for tag, speed in speeds.items():
        code = src(tag) + (f"SPEED = {speed!r}\n" if speed is not None else "")
        cid = store.add_candidate(pid, code, "triton", run_id=run_id, origin="llm")
        store.add_verdict(cid, fake_verdict(spec.key, code), "fp")
        ids[tag] = cid
    return run_id, ids


def test_final_selection_stores_the_winner_of_the_interleaved_retiming(tmp_path, spec):
    store = Store(str(tmp_path / "k.db"))
    run_id, ids = _stored_run(store, spec, {"A": 1.2, "B": 1.3, "C": 1.25, "D": 1.0})
    asked: list[tuple[int, int]] = []
    ms = {ids["A"]: 0.50, ids["B"]: 0.70, ids["C"]: 0.60}  # A really is fastest

    def measure_for(s, sources, device):
        assert s.key == spec.key and device == "cuda:0"
        assert set(sources) == {ids["A"], ids["B"], ids["C"]}  # D is not a finalist

        def measure(cid, rnd):
            asked.append((cid, rnd))
            return ms[cid] + 0.001 * rnd
        return measure

    console = Console(record=True, width=200)
    made = final_selection(store, run_id, [spec], "cuda:0", console, rounds=4,
                           measure_for=measure_for)
    assert len(asked) == 12 and [c for c, _ in asked[:3]] == [ids["B"], ids["C"], ids["A"]]
    sel = store.selections_for(run_id)[spec.key]
    assert sel.winner_id == ids["A"] and sel.decision == "clear"
    assert sel.margin_ms == pytest.approx(0.10) and sel.spread_ms == pytest.approx(0.0025)  # IQR of 4 rounds, +1 µs each
    assert sel.payload["finalists"] == [ids["B"], ids["C"], ids["A"]]
    assert made[spec.key]["winner"] == ids["A"]
    assert f"final selection {spec.key}: #{ids['A']}" in console.export_text()
    # run again with the same finalists (a resume with nothing new): not timed again
    final_selection(store, run_id, [spec], "cuda:0", console, measure_for=measure_for)
    assert len(asked) == 12


def test_final_selection_is_skipped_on_cpu_and_with_too_few_candidates(tmp_path, spec):
    store = Store(str(tmp_path / "k.db"))
    run_id, _ = _stored_run(store, spec, {"A": 1.2, "B": 1.3})

    def never(*a):
        raise AssertionError("nothing may be timed")

    console = Console(record=True, width=200)
    assert final_selection(store, run_id, [spec], "cpu", console, measure_for=never) == {}
    lines = console.export_text().strip().splitlines()
    assert lines == ["final selection skipped: no timing on cpu (timing exists only on a CUDA "
                     "GPU); each problem's best stays provisional"]
    one, _ = _stored_run(store, spec, {"A": 1.2, "B": None, "X": None}, name="one")
    assert final_selection(store, one, [spec], "cuda", console, measure_for=never) == {}
    assert store.selections_for(run_id) == {} and store.selections_for(one) == {}


def test_a_cpu_run_says_why_it_made_no_selection_and_runs_show_says_provisional(tmp_path,
                                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli.app, ["run", "--model", f"replay:{EXAMPLES}", "--problems",
                                     "level1/relu", "--device", "cpu", "--name", "cpu-run"])
    assert r.exit_code == 0, r.output
    assert "final selection skipped: no timing on cpu" in r.output
    shown = CliRunner().invoke(cli.app, ["runs", "show", "cpu-run"])
    assert shown.exit_code == 0, shown.output
    [row] = [ln for ln in shown.output.splitlines() if ln.lstrip().startswith("level1/relu")]
    assert "correct" in row and row.rstrip().endswith("provisional")


# -- runs show ----------------------------------------------------------------------------

def test_runs_show_marks_provisional_and_selected_bests(tmp_path, spec):
    other = load("level1/softmax")[0]
    db = tmp_path / "k.db"
    store = Store(str(db))
    run_id, ids = _stored_run(store, spec, {"A": 1.2, "B": 1.3})
    pid = store.upsert_problem(other.key, other.suite, other.source_hash, other.source)
    cid = store.add_candidate(pid, src("S") + "SPEED = 2.0\n", "triton", run_id=run_id)
    store.add_verdict(cid, fake_verdict(other.key, src("S") + "SPEED = 2.0\n"), "fp")

    def measure_for(s, sources, device):
        return lambda c, rnd: {ids["A"]: 0.5, ids["B"]: 0.9}[c]

    final_selection(store, run_id, [spec, other], "cuda", Console(file=io.StringIO()),
                    rounds=3, measure_for=measure_for)
    console = Console(record=True, width=250)
    show_run("r", str(db), False, console)
    text = console.export_text()
    rows = {ln.split()[0]: ln for ln in text.splitlines() if ln.lstrip().startswith("level1/")}
    assert rows[spec.key].rstrip().endswith(f"#{ids['A']} selected (+0.4 ms > 0)")
    assert rows[other.key].rstrip().endswith("provisional")
    assert f"selected {spec.key}: #{ids['A']} — #{ids['A']} beats #{ids['B']} by 0.4 ms" in text
    assert f"provisional: the best of {other.key} is not re-timed" in text

    r = CliRunner().invoke(cli.app, ["runs", "show", "r", "--store", str(db), "--json"])
    data = json.loads(r.output)
    assert {"run", "status", "config", "summary", "results"} <= set(data)  # the older keys
    assert data["provisional"] == [other.key] and data["population"] == {}
    sel = data["selections"][spec.key]
    assert sel["winner_id"] == ids["A"] and sel["decision"] == "clear"
    assert sel["margin_ms"] == pytest.approx(0.4) and "lineage" not in data


def test_after_a_selection_its_winner_is_the_result_everywhere(tmp_path, spec):
    """A within-spread tie keeps the simpler, earlier #A though #B's single verification read
    faster (1.3x against 1.2x: single timings are noisy, which is why finalists are re-timed).
    From then on the run's result for the problem is #A's verdict: the store's results (and
    so fast_p and runs show), the report's winner, kbench tune RUN's target and the export
    all take #A. Before the selection the best single verdict (#B) is the result."""
    from kbench.export._select import winners
    from kbench.report import build_report
    from kbench.tuning._targets import _from_run

    db = tmp_path / "k.db"
    store = Store(str(db))
    run_id, ids = _stored_run(store, spec, {"A": 1.2, "B": 1.3})
    assert dict(store.results(run_id))[spec.key]["speedup_eager"] == pytest.approx(1.3)

    def measure_for(s, sources, device):  # both 0.5 ms give or take 0.05: a tie
        return lambda c, rnd: 0.5 + (0.05 if (c + rnd) % 2 else -0.05)

    final_selection(store, run_id, [spec], "cuda", Console(file=io.StringIO()), rounds=4,
                    measure_for=measure_for)
    sel = store.selections_for(run_id)[spec.key]
    assert sel.decision == "within_spread" and sel.winner_id == ids["A"], sel
    assert dict(store.results(run_id))[spec.key]["speedup_eager"] == pytest.approx(1.2)
    console = Console(record=True, width=250)
    show_run("r", str(db), False, console)
    [row] = [ln for ln in console.export_text().splitlines() if ln.lstrip().startswith(spec.key)]
    assert " 1.20 " in row and " 1.30 " not in row, row
    [entry] = [r.problems[spec.key] for r in build_report(str(db)).runs]
    assert entry.winner.id == ids["A"] and entry.best["speedup_eager"] == pytest.approx(1.2)
    found, skipped = winners(store, store.get_run("r"))  # fake verdicts: not exportable
    assert not found and skipped[0].startswith(f"{spec.key}: candidate {ids['A']} (final "
                                               "selection)"), skipped
    targets, skipped = _from_run("r", str(db))  # no knobs: skipped, naming the candidate
    assert not targets and skipped == [f"{spec.key}: candidate {ids['A']} declares no knobs"]


def test_runs_show_lists_an_evolve_runs_population_and_lineage(tmp_path, spec):
    db = tmp_path / "k.db"
    store = Store(str(db))
    run_id = store.create_run("evo", model="keyed", strategy="evolve")
    provider = KeyedProvider({(KEY, s): t for s, t in SCRIPT.items()})
    run_evolve(store, run_id, spec, evolve_cfg(), provider, [])
    lin = store.lineage_for(run_id)
    sample = {r.candidate_id: (r.generation * 2 + r.island) * 2 + r.slot for r in lin.values()}
    cand = {s: c for c, s in sample.items()}

    r = CliRunner().invoke(cli.app, ["runs", "show", "evo", "--store", str(db), "--lineage"])
    assert r.exit_code == 0, r.output
    out = r.output.splitlines()
    top = out.index(next(ln for ln in out if f"population of {KEY}" in ln))
    pop = {c[0]: c for c in ([x.strip() for x in ln.split("│")] for ln in out[top + 1:])
           if c[0] in ("0", "1")}
    # island, generations, attempts, correct, best, duplicates refused
    # island 0: samples 0 1 4 5 8 9 (A X C D G H); island 1: 2 3 6 7 10 11 (B dup E F I dup)
    assert pop["0"] == ["0", "3", "6", "5", f"#{cand[8]} 2.10x", "0"]
    assert pop["1"] == ["1", "3", "6", "3", f"#{cand[10]} 2.50x", "2"]
    assert "provisional" in r.output  # no final selection on CPU

    lines = [ln.strip() for ln in out if ln.strip().startswith("#")]
    assert len(lines) == 12
    for rec in lin.values():
        parents = ",".join(f"#{p}" for p in rec.parent_ids) or "–"
        [line] = [ln for ln in lines if ln.startswith(f"#{rec.candidate_id} ←")]
        assert line.startswith(f"#{rec.candidate_id} ← {parents}  {rec.kind}  "
                               f"g{rec.generation} i{rec.island}  ")
        s = sample[rec.candidate_id]
        if s in DUPLICATES:
            assert line.endswith(f"refused: duplicate of candidate #{cand[DUPLICATES[s]]} "
                                 "(same code after normalisation)")
        elif s in (1, 7):
            assert line.endswith("incorrect")
        else:
            speed = float(SCRIPT[s].split("SPEED = ")[1].split()[0])
            assert line.endswith(f"correct {speed:.2f}x")

    js = json.loads(CliRunner().invoke(cli.app, ["runs", "show", "evo", "--store", str(db),
                                                 "--json", "--lineage"]).output)
    isl = js["population"][KEY]["islands"]
    assert isl["1"]["duplicates"] == 2 and isl["0"]["best_id"] == cand[8]
    assert len(js["lineage"][KEY]) == 12



def test_the_real_measure_checks_and_times_the_main_shape_only(monkeypatch):
    """Finalists were checked on every shape already: each interleaved re-timing verifies the
    main shape only, with the re-timing limits, and reads that shape's median."""
    import sandbox.verifier
    from kbench.selection import RETIME_LIMITS, verify_measure
    from sandbox.verdict import ShapeResult, Status, Timing, Verdict

    seen = []

    def verify(spec, source, *, device=None, limits=None, timing=False, **_):
        seen.append((list(spec.shapes_for(device)), limits, timing))
        t = Timing(0.5, 0.01, 0.5, 0.49, 100, 0.001)
        return Verdict(problem=spec.key, status=Status.CORRECT, device=device, backend="triton",
                       reason="correct", shapes=(ShapeResult("main", {}, False, 3, True, timing=t),))

    monkeypatch.setattr(sandbox.verifier, "verify", verify)
    spec = load("level1/softmax")[0]
    assert len(spec.shapes_for("cuda")) > 1
    measure = verify_measure(spec, {"a": "src"}, device="cuda:0")
    assert measure("a", 0) == 0.5
    assert seen == [(["main"], RETIME_LIMITS, True)]
