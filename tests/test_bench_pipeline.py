"""bench/bench_pipeline.py's driver: each finished measurement of a worker is shown and
written to ``--out`` as it comes, so a run killed at its time limit keeps what it measured."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bp():
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_pipeline.py"
    spec = importlib.util.spec_from_file_location("bench_pipeline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _FakeWorker:
    """A worker process: the given stdout lines, then ``rc``."""

    def __init__(self, lines: list[str], rc: int = 0) -> None:
        self.lines, self.rc = lines, rc

    def __call__(self, cmd, *, stderr, **kw):
        stderr.write("Traceback: boom\n" if self.rc else "")
        self.stdout = io.StringIO("".join(line + "\n" for line in self.lines))
        return self

    def wait(self) -> int:
        return self.rc


ROW = {"status": "correct", "wall_s": 1.5, "phases": {"timing": 0.5}, "median_ms": 0.1,
       "count": 30, "reason": ""}


def test_run_takes_each_part_as_it_comes_and_the_result_at_the_end(bp, monkeypatch):
    seen: list[tuple[str, dict]] = []
    entry: dict = {}
    lines = [json.dumps({"note": "level1/relu: baselines measured, caches warm", "s": 20.0}),
             "some library's own line",
             json.dumps({"part": ["level1/relu"], "value": [ROW], "s": 1.5}),
             json.dumps({"part": ["alone", "level1/relu"], "value": ROW, "s": 1.5}),
             json.dumps({"result": {"level1/relu": [ROW, ROW]}})]
    monkeypatch.setattr(bp.subprocess, "Popen", _FakeWorker(lines))
    out = bp._run(Path("."), "warm", "s.db", 2, entry,
                  lambda text: seen.append((text, json.loads(json.dumps(entry)))))
    assert out == {"level1/relu": [ROW, ROW]}
    assert [t for t, _ in seen] == ["level1/relu: baselines measured, caches warm: 20.0 s",
                                    "level1/relu: 1.5 s", "alone/level1/relu: 1.5 s"]
    assert seen[1][1] == {"level1/relu": [ROW]}  # in the entry before the worker ended
    assert seen[2][1]["alone"] == {"level1/relu": ROW}


def test_a_worker_that_dies_keeps_its_parts_and_says_why(bp, monkeypatch):
    lines = [json.dumps({"part": ["first"], "value": ROW, "s": 30.0})]
    monkeypatch.setattr(bp.subprocess, "Popen", _FakeWorker(lines, rc=1))
    out = bp._run(Path("."), "cuda", "s.db", 2, {}, lambda text: None)
    assert out["first"] == ROW and out["error"].startswith("worker exited 1: Traceback: boom")


def test_out_is_rewritten_after_each_measurement(bp, monkeypatch, tmp_path, capsys):
    out = tmp_path / "r.json"
    on_disk: list[dict] = []

    def run(tree, what, store, reps, entry, progress, problems=None):
        for p in bp.EXAMPLES[:2]:
            entry[p] = [ROW]
            progress(f"{p}: 1.5 s")
            on_disk.append(json.loads(out.read_text()))
        return {p: [ROW] for p in bp.EXAMPLES}

    monkeypatch.setattr(bp, "_run", run)
    monkeypatch.setattr(sys, "argv", ["bench_pipeline.py", "--only", "warm", "--out", str(out)])
    assert bp.main() == 0
    first = on_disk[0]["warm:new"]
    assert first["unfinished"] is True and first[bp.EXAMPLES[0]] == [ROW]
    assert bp.EXAMPLES[1] in on_disk[1]["warm:new"]
    final = json.loads(out.read_text())["warm:new"]
    assert "unfinished" not in final and len(final) == len(bp.EXAMPLES)
    cap = capsys.readouterr()
    assert "warm (new) started" in cap.err and f"warm (new) {bp.EXAMPLES[0]}: 1.5 s" in cap.err
    assert "| warm verification, median of the problems measured (s) | 1.50 (8) |" in cap.out  # the table, as before


def test_new_tree_first_and_the_old_warm_measure_narrowed(bp, monkeypatch, tmp_path, capsys):
    """With --compare the new tree is measured first (a time limit cuts the old one's
    figures), the old tree's warm measure covers --old-problems only, and the table compares
    the problems both measured."""
    calls = []

    def run(tree, what, store, reps, entry, progress, problems=None):
        calls.append((tree, problems))
        return {p: [ROW] for p in (problems or bp.EXAMPLES)}

    monkeypatch.setattr(bp, "_run", run)
    old = tmp_path / "old"
    old.mkdir()
    monkeypatch.setattr(sys, "argv", ["bench_pipeline.py", "--only", "warm", "--compare",
                                      str(old), "--old-problems", "level1/relu,level1/matmul"])
    assert bp.main() == 0
    assert calls == [(bp.ROOT, None), (old.resolve(), ["level1/relu", "level1/matmul"])]
    out = capsys.readouterr().out
    assert "| warm verification, level1/softmax (s) | 1.50 | - |" in out
    assert "| warm verification, median of the 2 both measured (s) | 1.50 | 1.50 |" in out


def test_the_old_tree_runs_only_the_measures_old_only_names(bp, monkeypatch, tmp_path):
    """The old tree's verifications are slow: by default it skips cuda, repeat and
    concurrent, which the new tree still runs."""
    calls = []

    def run(tree, what, store, reps, entry, progress, problems=None):
        calls.append((what, tree))
        return {"rows": [ROW]} if what == "repeat" else {p: [ROW] for p in (problems or bp.EXAMPLES)}

    monkeypatch.setattr(bp, "_run", run)
    old = tmp_path / "old"
    old.mkdir()
    monkeypatch.setattr(sys, "argv", ["bench_pipeline.py", "--only", "warm,repeat", "--compare",
                                      str(old)])
    assert bp.main() == 0
    assert calls == [("warm", bp.ROOT), ("warm", old.resolve()), ("repeat", bp.ROOT)]
    calls.clear()
    monkeypatch.setattr(sys, "argv", ["bench_pipeline.py", "--only", "warm,repeat", "--compare",
                                      str(old), "--old-only", "all"])
    assert bp.main() == 0
    assert ("repeat", old.resolve()) in calls


@pytest.mark.slow
def test_the_eval_measure_runs_kbench_eval_as_a_user_would(tmp_path):
    """The `eval` and `repeat` measures end to end on CPU (--device cpu): three real `kbench
    eval` runs that pass (the first leaves its fork server for the second; the third starts
    its own), their walls recorded, and a worker's five verifications. It once called
    `kbench eval PROBLEM FILE`, a usage error whose wall would have been reported as the
    pipeline's speed."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "r.json"
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("KBENCH_STORE", None)
    env.pop("KBENCH_KEEP_SERVER", None)  # the measure keeps the first eval's server itself
    r = subprocess.run([sys.executable, str(root / "bench" / "bench_pipeline.py"), "--only",
                        "eval,repeat", "--device", "cpu", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(out.read_text())["eval:new"]
    assert "error" not in res and len(res["walls_s"]) == 3, res
    assert res["kept_servers"] == 1, res
    assert ("| `kbench eval`, fresh directory, warm store: server kept by the command before "
            "/ its own (s) |") in r.stdout
    rows = json.loads(out.read_text())["repeat:new"]["rows"]  # a worker process's measure
    assert len(rows) == 5 and all(x["status"] == "correct" for x in rows), rows


def test_first_call_profile_runs_the_childs_steps_in_the_interpreter(tmp_path):
    """bench/first_call_profile.py on CPU: the same steps as on a GPU (server imports, the
    example, two watched calls), its output right, and the profile printed."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "bench" / "first_call_profile.py"
    r = subprocess.run([sys.executable, str(script), "--device", "cpu", "--cache",
                        str(tmp_path / "cache"), "--top", "5"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "watched ok True/True, output agrees with the reference: True" in r.stdout
    assert "first watched call" in r.stdout and "cumulative" in r.stdout


def test_verify_profile_lists_both_sides_of_a_warm_verification():
    """bench/verify_profile.py on CPU: the example verified twice, the second time with the
    parent and the child (through bench/_profiled_child.py) under cProfile, both listed."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "bench" / "verify_profile.py"
    r = subprocess.run([sys.executable, str(script), "--device", "cpu", "--top", "10"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    assert "profiled verification: correct" in r.stdout
    parent, child = r.stdout.split("== parent", 1)[1].split("== child", 1)
    assert "sandbox/verifier.py" in parent
    assert "sandbox/_child.py" in child and "(main)" in child


def test_case_overlap_compares_two_trees_on_the_synthetic_heavy_problem():
    """bench/case_overlap.py on CPU, this tree against itself: both rows measured."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "bench" / "case_overlap.py"), "--compare",
                        str(root), "--device", "cpu", "--reps", "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    assert "| new |" in r.stdout and "| old |" in r.stdout and "old / new:" in r.stdout


def test_eval_profile_times_three_evals_and_lists_the_parent(tmp_path):
    """bench/eval_profile.py on CPU: three `kbench eval` processes sharing a store (cold,
    warm, profiled), the warm run's phases, and the profiled parent's listing."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "bench" / "eval_profile.py"
    r = subprocess.run([sys.executable, str(script), "--device", "cpu", "--problem",
                        "level1/relu", "--top", "25"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "warm store" in r.stdout and "phases of the warm run" in r.stdout
    assert "cumulative" in r.stdout and "kbench/cli.py" in r.stdout


def test_compare_speed_times_both_trees_and_shows_their_verdicts():
    """bench/compare_speed.py on CPU, this tree against itself: a passing and a failing
    output, each tree's time, verdict and errors, and the ratio."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "bench" / "compare_speed.py"), "--device",
                        "cpu", "--compare", str(root), "--elems", "4096", "--reps", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| passes") or
            ln.startswith("| fails")]
    assert len(rows) == 4 and sum("| correct |" in ln for ln in rows) == 2, r.stdout
    assert sum("| mismatch |" in ln for ln in rows) == 2, r.stdout
    assert "passes: old / new = " in r.stdout and "fails: old / new = " in r.stdout


def test_server_start_times_the_fork_servers_imports_step_by_step():
    """bench/server_start.py on CPU: one process, the server's steps in its order, a total."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "bench" / "server_start.py"), "--runs", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    for step in ("| torch |", "| torch._dynamo |", "| triton_key() |", "| **total** |"):
        assert step in r.stdout, r.stdout


def test_placement_spread_times_each_allocation_in_each_pass():
    """bench/placement_spread.py on CPU (interpreter, host times): every allocation in every
    pass, and both spreads (over allocations per pass, over passes per allocation)."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "bench" / "placement_spread.py"), "--device",
                        "cpu", "--allocs", "2", "--passes", "2"], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "TRITON_INTERPRET": "1"})
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| 1 |") or ln.startswith("| 2 |")]
    assert len(rows) == 4, r.stdout
    assert r.stdout.count("spread over allocations") == 2
    assert r.stdout.count("spread over passes") == 2
