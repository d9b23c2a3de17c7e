"""The load test (bench/load_test.py) at CI size on CPU: one `kbench run` over candidates of
every kind (honest Triton and CUDA, incorrect, crashing, out-of-bounds, cheating), SIGKILLed
midway and resumed; every reply stored once with its verdict, each kind as expected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_killed_and_resumed_run_loses_and_repeats_nothing(tmp_path):
    out = tmp_path / "load.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "load_test.py"), "--candidates", "14",
                        "--device", "cpu", "--kill-after", "12", "--json", str(out),
                        "--store", str(tmp_path / "load.db")],
                       capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    d = json.loads(out.read_text())
    assert d["candidates"] == d["stored"] == 14 and d["problems"] == []
    assert d["killed_after_s"] is not None and d["verdicts_at_kill"] < 14, d
    assert d["run_status"] == "finished"
    t = d["table"]
    assert t["honest_triton"] == {"correct": 4} and t["incorrect"] == {"incorrect": 2}
    assert t["crash"] == {"runtime_error": 2} and t["oob"] == {"runtime_error": 2}
    assert t["cheat"] == {"rejected": 2} and t["honest_cuda"] == {"unsupported": 2}
    # each kind's verification time, to say where a slow load test's time went
    w = d["wall"]["honest_triton"]
    assert w["n"] == 4 and 0 < w["median_s"] <= w["max_s"] <= w["sum_s"]
    assert w["phases_s"] and "largest phases" in r.stdout


def test_the_cuda_cap_puts_honest_triton_candidates_in_the_rest_of_the_cuda_places(tmp_path):
    import collections
    import importlib.util

    spec = importlib.util.spec_from_file_location("load_test", ROOT / "bench" / "load_test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    free = collections.Counter(mod.write_replay(tmp_path / "a.jsonl", 70, hang=True).values())
    capped = collections.Counter(
        mod.write_replay(tmp_path / "b.jsonl", 70, hang=True, cuda_max=3).values())
    assert free["honest_cuda"] > 3 and capped["honest_cuda"] == 3
    assert capped["honest_triton"] == free["honest_triton"] + free["honest_cuda"] - 3
    assert sum(capped.values()) == 70 and capped["hang"] == free["hang"] == 2
    lines = (tmp_path / "b.jsonl").read_text().splitlines()
    assert len(lines) == 70 and len(set(lines)) == 70  # every reply distinct
