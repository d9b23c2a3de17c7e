"""What the warm fork server's start costs, import by import: the part of ``kbench eval``
that a fresh process waits for before its first child can fork (docs/benchmarks.md §11).

Each run is a new Python process that does what ``sandbox._forkserver._preimport`` does, in
the same order, and prints the seconds of each step. The first run of a machine shows the
cost of compiling bytecode where none was installed; later runs, what a user's installation
(which ``pip`` compiled) pays.

    python bench/server_start.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# One process's steps, timed where they happen (the server's own order).
_STEPS = r'''
import json, os, sys, time
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
t0 = time.perf_counter(); out = {}
def lap(name):
    global t0
    now = time.perf_counter(); out[name] = now - t0; t0 = now
import numpy; lap("numpy")
import torch; lap("torch")
import torch.utils.cpp_extension; lap("torch.utils.cpp_extension")
import triton, triton.compiler.code_generator, triton.language; lap("triton")
import sandbox._child, sandbox.timing; lap("sandbox._child, sandbox.timing")
import torch._dynamo; lap("torch._dynamo")
from sandbox import precision; precision.apply(None); lap("precision.apply (inductor config)")
from triton.runtime.cache import triton_key; triton_key(); lap("triton_key()")
print(json.dumps(out))
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    runs = []
    for _ in range(args.runs):
        r = subprocess.run([sys.executable, "-c", _STEPS], env=env, capture_output=True,
                           text=True, timeout=600)
        if r.returncode != 0:
            raise SystemExit(f"run failed: {r.stderr[-800:]}")
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    names = list(runs[0])
    print("| step | " + " | ".join(f"run {i + 1} (s)" for i in range(len(runs))) + " |")
    print("|---|" + "---:|" * len(runs))
    for n in names:
        print(f"| {n} | " + " | ".join(f"{r[n]:.2f}" for r in runs) + " |")
    print("| **total** | " + " | ".join(f"**{sum(r.values()):.2f}**" for r in runs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
