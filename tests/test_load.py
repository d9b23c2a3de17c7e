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
