"""Where ``kbench eval`` spends a fresh directory's run with a warm store: 10.05 s on an H100,
about 5.5 s of it outside the verdict's phases (docs/benchmarks.md §9).

Three ``kbench eval`` processes on one example, each in a new directory, sharing one store:
the first warms the store (baselines, builds), the second is timed as a user sees it, and the
third runs under cProfile, whose cumulative listing shows the parent's own time (imports,
CUDA start, store, references) beside the wait for the child.

    python bench/eval_profile.py --problem level1/softmax --device cuda

``--device cpu`` runs it in Triton's interpreter (a smoke test; its times say nothing about
a GPU).
"""

from __future__ import annotations

import argparse
import importlib.resources
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _eval(problem: str, store: Path, device: str, prof: Path | None) -> tuple[float, dict]:
    cwd = Path(tempfile.mkdtemp(prefix="kb-eval-"))
    cand = cwd / "cand.py"
    cand.write_text(importlib.resources.files("kbench").joinpath(
        f"examples/{problem}.py").read_text())
    # The profiled run calls kbench.cli.main under cProfile.run (which writes its file on the
    # way out): the console script's own exit (entry) would leave before the file is written.
    argv = ["eval", "--problem", problem, "--candidate", str(cand), "--store", str(store),
            "--device", device, "--json"]
    run = (["-c", f"import cProfile, sys; sys.argv = ['kbench', *{argv!r}]; "
                  f"from kbench.cli import main; cProfile.run('main()', {str(prof)!r})"]
           if prof else ["-m", "kbench.cli", *argv])
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, *run], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    try:
        verdict = json.loads(r.stdout)
    except ValueError:
        verdict = {}
    if r.returncode != 0 or not verdict.get("passed"):
        raise SystemExit(f"kbench eval exited {r.returncode}: {(r.stderr or r.stdout)[-400:]}")
    return wall, verdict.get("phases", {})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="level1/softmax", help="a problem with a shipped example")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--top", type=int, default=45, help="functions to list")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    tmp = Path(tempfile.mkdtemp(prefix="kb-evalprof-"))
    store, prof = tmp / "store.db", tmp / "eval.prof"
    cold, _ = _eval(args.problem, store, args.device, None)
    warm, phases = _eval(args.problem, store, args.device, None)
    profiled, _ = _eval(args.problem, store, args.device, prof)
    print(f"kbench eval {args.problem} on {args.device}: cold store {cold:.2f} s, "
          f"warm store {warm:.2f} s (profiled: {profiled:.2f} s)")
    print("phases of the warm run (s): " + ", ".join(
        f"{k} {v:.2f}" for k, v in phases.items() if isinstance(v, (int, float))))
    out = io.StringIO()
    pstats.Stats(str(prof), stream=out).sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
