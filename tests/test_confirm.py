"""Timing confirmed from outside the candidate's process (issue 12, sandbox/confirm.py): the
one-sided rule, Nsight Compute's summed kernel durations, and the winners of a run confirmed
and stored after the final selection (runs show prints it; a disagreement is a warning)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rich.console import Console

from kbench.problems import load
from kbench.runflow import confirm_winners
from kbench.store import Store
from sandbox.confirm import TOLERANCE, check
from sandbox.profile import summarize_ncu
from tests.test_profile import NCU_CSV
from tests.test_selection import _stored_run


def test_events_below_the_kernels_own_durations_disagree_slower_is_fine():
    ncu = {"total_duration_ns": 400_000.0, "kernels": 3}
    ok = check(0.45, ncu)  # launch gaps make events a little slower than the kernels: fine
    assert ok["agrees"] is True and ok["ncu_ms"] == pytest.approx(0.4)
    assert ok["reason"].startswith("confirmed: 0.45 ms per call")
    assert check(0.4 * (1 - TOLERANCE) + 1e-9, ncu)["agrees"] is True  # at the edge
    bad = check(0.04, ncu)  # a forged or amortised time: 10x below what the kernels took
    assert bad["agrees"] is False and bad["ratio"] == pytest.approx(0.1)
    assert "NOT confirmed" in bad["reason"] and "10.00x longer" in bad["reason"]
    capped = check(0.01, {"total_duration_ns": 400_000.0, "kernels": 16})
    assert "the first 16 kernels of the call" in capped["reason"]


@pytest.mark.parametrize(("events", "ncu", "why"), [
    (None, {"total_duration_ns": 1.0}, "was not timed"),
    (0.5, {"error": "ncu not found on PATH"}, "ncu not found on PATH"),
    (0.5, {"total_duration_ns": None, "kernels": 0}, "recorded no kernel duration"),
    (0.5, None, "recorded no kernel duration"),
])
def test_nothing_to_compare_is_not_confirmed_and_says_why(events, ncu, why):
    out = check(events, ncu)
    assert out["agrees"] is None and out["reason"].startswith("not confirmed") and why in out["reason"]


def test_ncu_summary_sums_every_kernel_of_the_call():
    rec = summarize_ncu(NCU_CSV)
    assert rec["total_duration_ns"] == pytest.approx(3200.0 + 41216.0)
    assert rec["duration_ns"] == pytest.approx(41216.0)  # the longest, as before


@pytest.fixture(scope="module")
def spec():
    return load("level1/relu")[0]


def test_winners_are_confirmed_after_the_selection_stored_and_warned(tmp_path, spec):
    store = Store(str(tmp_path / "k.db"))
    run_id, ids = _stored_run(store, spec, {"A": 1.2, "B": 1.5, "X": None})
    asked: list[str] = []

    def confirm_for(s, source, device):
        asked.append(source)
        return check(0.01, {"total_duration_ns": 200_000.0, "kernels": 1})

    console = Console(record=True, width=300)
    made = confirm_winners(store, run_id, [spec], "cuda:0", console, confirm_for=confirm_for)
    # no selection was made (one call, no re-timing here): the fastest correct candidate
    sel = store.selections_for(run_id)[spec.key]
    assert sel.winner_id == ids["B"] and sel.decision == "only"
    conf = sel.payload["confirmation"]
    assert conf["candidate"] == ids["B"] and conf["agrees"] is False
    assert made[spec.key]["agrees"] is False and len(asked) == 1 and "SPEED = 1.5" in asked[0]
    assert f"timing of {spec.key} #{ids['B']}: timing NOT confirmed" in console.export_text()
    from kbench.runflow import show_run

    shown = Console(record=True, width=400)
    show_run("r", str(tmp_path / "k.db"), False, shown)
    assert "timing NOT confirmed: CUDA events in the candidate's process say" in shown.export_text()
    # confirmed once: not measured again
    confirm_winners(store, run_id, [spec], "cuda:0", console, confirm_for=confirm_for)
    assert len(asked) == 1
    # off CUDA, or untimed: nothing
    other, _ = _stored_run(store, spec, {"A": 1.2}, name="other")
    assert confirm_winners(store, other, [spec], "cpu", console, confirm_for=confirm_for) == {}
    assert confirm_winners(store, other, [spec], "cuda", console, timing=False,
                           confirm_for=confirm_for) == {}
    assert store.selections_for(other) == {}


def test_an_existing_selection_keeps_its_decision_and_gains_the_confirmation(tmp_path, spec):
    store = Store(str(tmp_path / "k.db"))
    run_id, ids = _stored_run(store, spec, {"A": 1.2, "B": 1.5})
    store.put_selection(run_id, spec.key, {"winner": ids["A"], "decision": "clear",
                                           "reason": "A beat B", "finalists": [ids["B"], ids["A"]]})
    confirm_winners(store, run_id, [spec], "cuda:0", Console(record=True),
                    confirm_for=lambda s, src, d: check(0.5, {"total_duration_ns": 450_000.0}))
    sel = store.selections_for(run_id)[spec.key]
    assert sel.winner_id == ids["A"] and sel.decision == "clear" and sel.reason == "A beat B"
    assert sel.payload["confirmation"]["agrees"] is True
    assert sel.payload["confirmation"]["candidate"] == ids["A"]


def test_export_carries_the_winners_confirmation(tmp_path, spec, monkeypatch):
    """`kbench export` names, per op, whether its time was confirmed, and warns on a
    disagreement (the package README says so too)."""
    from dataclasses import replace

    import tests.test_selection
    from kbench.export._readme import readme
    from kbench.export._select import winners
    from sandbox.verdict import ShapeResult

    real = tests.test_selection.fake_verdict

    def with_a_shape(problem, code, sol_pct=None):  # exportable: correct on a checked shape
        return replace(real(problem, code, sol_pct),
                       shapes=(ShapeResult("main", {"n": 8}, False, 3, True),))

    monkeypatch.setattr(tests.test_selection, "fake_verdict", with_a_shape)
    store = Store(str(tmp_path / "k.db"))
    run_id, ids = _stored_run(store, spec, {"A": 1.2, "B": 1.5})
    run = store.get_run("r")
    [w] = winners(store, run)[0]
    assert w.timing.startswith("not confirmed (no confirmation stored")
    confirm_winners(store, run_id, [spec], "cuda:0", Console(record=True),
                    confirm_for=lambda s, src, d: check(0.01, {"total_duration_ns": 2e5}))
    [w] = winners(store, run)[0]
    assert w.candidate.id == ids["B"] and w.confirmation["agrees"] is False
    assert w.timing.startswith("timing NOT confirmed")
    summary = {"problem": spec.key, "op": "torch.ops.p.relu", "candidate": w.candidate.id,
               "chosen_by": w.chosen_by, "backend": "triton", "shapes": {}, "device": "cuda:0",
               "fingerprint": {}, "timing": w.timing,
               "timing_agrees": w.confirmation["agrees"]}
    text = readme("p", "r", [summary], [])
    assert f"- {spec.key}: timing NOT confirmed" in text and "**(disagreement)**" in text


# -- a confirmation's cost and its limits (bench/check_confirm.py) --------------------------
def test_limits_within_keep_both_children_inside_the_budget():
    from sandbox.confirm import limits_within
    from sandbox.job import Limits

    lim = limits_within(150.0)
    assert lim.profile_ncu is False  # only the limits change; confirm_timing turns ncu on
    # the candidate's child: import + check + timing; the ncu child: import + check
    assert 2 * lim.import_s + 2 * lim.check_s + lim.timing_s == pytest.approx(150.0)
    assert lim.compile_allowance_s <= lim.check_s / 2  # a first trial may use all of check
    assert lim.timing.limit_s <= lim.timing_s
    # limits already lower than the budget's shares stay
    low = limits_within(10_000.0, Limits(import_s=5.0, check_s=6.0, timing_s=7.0))
    assert (low.import_s, low.check_s, low.timing_s) == (5.0, 6.0, 7.0)
    assert low.trials == Limits().trials  # what is checked is not changed


def test_a_confirmation_measures_no_baselines_but_keeps_the_device_facts():
    from types import SimpleNamespace

    from sandbox.baselines import MemoryCache, _baselines
    from sandbox.confirm import _WithoutBaselines

    inner = MemoryCache()
    cache = _WithoutBaselines(inner)

    def run(sub, mode, todo):
        raise AssertionError(f"a {mode} baseline was measured")

    case = SimpleNamespace(name="main", timed=True, params={"n": 8})
    spec = SimpleNamespace(key="level1/relu", source_hash="h")
    out = _baselines(spec, [case], Path("/nonexistent"), cache, {}, "fp", run)
    assert out == {("main", "eager"): None, ("main", "compile"): None}
    assert inner.baselines == {}  # nothing stored as failed in the real cache
    cache.put_device_facts("fp", {}, {"peak": 1.0})
    assert inner.get_device_facts("fp").facts == {"peak": 1.0}
    assert cache.get_device_facts("fp").facts == {"peak": 1.0}


def _fake_verify(seen, *, passed=True):
    from types import SimpleNamespace

    from sandbox.verdict import Status

    def verify(spec, source, **kw):
        seen.update(kw, spec=spec)
        shape = SimpleNamespace(name="main", timing=SimpleNamespace(median_ms=0.5))
        return SimpleNamespace(
            passed=passed, status=Status.CORRECT if passed else Status.TIMEOUT,
            reason=None if passed else "the check phase passed its 37.5 s limit",
            shapes=[shape], phases={"correctness": 1.25, "timing": 2.0},
            profile={"shape": "main", "ncu": {"total_duration_ns": 450_000.0, "kernels": 1,
                                              "wall_s": 9.5}})
    return verify


def test_confirm_timing_skips_the_baselines_unless_asked(monkeypatch, spec):
    from sandbox.baselines import MemoryCache
    from sandbox.confirm import _WithoutBaselines, confirm_timing, limits_within

    seen: dict = {}
    monkeypatch.setattr("sandbox.verifier.verify", _fake_verify(seen))
    store = MemoryCache()
    out = confirm_timing(spec, "src", device="cuda", cache=store, limits=limits_within(100.0))
    assert isinstance(seen["cache"], _WithoutBaselines) and seen["cache"].cache is store
    assert seen["limits"].profile_ncu is True and seen["limits"].import_s == pytest.approx(20.0)
    assert seen["timing"] is True and list(seen["spec"].shapes_for("cuda")) == ["main"]
    assert out["agrees"] is True and out["ncu_ms"] == pytest.approx(0.45)
    assert out["phases"] == {"correctness": 1.25, "timing": 2.0, "ncu": 9.5}
    assert out["wall_s"] >= 0
    confirm_timing(spec, "src", device="cuda", cache=store, baselines=True)
    assert seen["cache"] is store


def test_a_confirmation_that_times_out_says_so(monkeypatch, spec):
    from sandbox.confirm import confirm_timing

    monkeypatch.setattr("sandbox.verifier.verify", _fake_verify({}, passed=False))
    out = confirm_timing(spec, "src", device="cuda")
    assert out["agrees"] is None and out["status"] == "timeout"
    assert out["reason"] == ("not confirmed: the confirming verification ended timeout: "
                             "the check phase passed its 37.5 s limit")
    assert "wall_s" in out and out["phases"]["ncu"] == 9.5


def _check_confirm():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "check_confirm.py"
    mod_spec = importlib.util.spec_from_file_location("check_confirm", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def test_check_confirm_prints_and_writes_each_problem_as_it_ends(tmp_path, capsys):
    import json

    mod = _check_confirm()
    out = tmp_path / "c.json"
    calls: list[str] = []

    def confirm(spec, src, *, device, cache, limits):
        calls.append(spec.key)
        if calls[1:]:  # what was confirmed before is already on disk and on screen
            assert [r["problem"] for r in json.loads(out.read_text())] == calls[:-1]
            assert calls[-2] in capsys.readouterr().out
        assert limits.import_s == pytest.approx(0.2 * 50.0)
        if spec.key == "level1/softmax":
            raise RuntimeError("the harness broke")
        if spec.key == "level1/matmul":
            time.sleep(0.06)  # past its (tiny) budget: marked, the next goes on
        return {**check(0.5, {"total_duration_ns": 450_000.0, "kernels": 1}),
                "status": "correct", "phases": {"timing": 2.0}}

    rows = mod.run(["level1/relu", "level1/softmax", "level1/matmul", "level1/relu"],
                   device="cuda", limit_s=50.0, json_path=str(out), confirm=confirm)
    assert [r["problem"] for r in json.loads(out.read_text())] == calls == [
        "level1/relu", "level1/softmax", "level1/matmul", "level1/relu"]
    assert rows[0]["agrees"] is True and rows[1]["status"] == "error"
    assert "RuntimeError: the harness broke" in rows[1]["reason"]
    assert all(r["wall_s"] >= 0 for r in rows) and not any(r.get("over_limit") for r in rows)
    text = capsys.readouterr().out
    assert "confirmed: 0.5 ms per call" in text and "seconds: timing 2.0" in text

    slow = mod.run(["level1/matmul"], device="cuda", limit_s=0.05,
                   confirm=lambda s, src, **kw: (time.sleep(0.06), {
                       **check(0.5, {"total_duration_ns": 4e5}), "status": "correct"})[1])
    assert slow[0]["over_limit"] is True and "over the 0.05 s limit" in slow[0]["reason"]
