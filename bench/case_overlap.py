"""Warm verifications of a parameter-heavy problem, this tree against an older one: the
effect of making the parent's references beside the child (both sides build each shape's
model on the CPU from a fresh seed, KernelBench's way).

Each tree runs in its own process. It verifies the candidate ``--reps`` times, and reports
the median wall time and the last verdict's phases. The first run is left out: it builds
and caches.

    python bench/case_overlap.py --compare /tmp/oldtree --device cpu      # synthetic problem
    python bench/case_overlap.py --compare /tmp/oldtree --device cuda --problem level3/mlp

Without ``--problem``, it uses a synthetic problem: ReLU behind an unused
``nn.Linear(8192, 8192)``, 67M parameters initialised on the CPU per shape, with the shipped
ReLU kernel behind the same layer as the candidate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_PROBLEM = textwrap.dedent('''
    import torch
    import torch.nn as nn
    batch_size = 4
    dim = 64
    KBENCH = {"cpu_shapes": {"small": {"batch_size": 4, "dim": 64},
                             "wide": {"batch_size": 4, "dim": 128}},
              "shapes": {"main": {"batch_size": 16, "dim": 1048576},
                         "odd": {"batch_size": 7, "dim": 100003}}}
    class Model(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.lin = nn.Linear(8192, 8192)  # a large model's CPU initialisation, unused
        def forward(self, x):
            return torch.relu(x)
    def get_inputs():
        return [torch.randn(batch_size, dim)]
    def get_init_inputs():
        return [dim]
    ''')

_WORKER = textwrap.dedent('''
    import json, statistics, sys, time
    from kbench.problems import load, load_file
    from sandbox import Limits, MemoryCache, verify
    problem, source_path, device, reps = sys.argv[1:5]
    spec = load_file(problem) if problem.endswith(".py") else load(problem)[0]
    src = open(source_path).read()
    cache, walls, v = MemoryCache(), [], None
    for i in range(int(reps) + 1):
        t = time.perf_counter()
        v = verify(spec, src, device=device, cache=cache)
        if i:
            walls.append(time.perf_counter() - t)
        if not v.passed:
            print(json.dumps({"error": v.status.value + ": " + v.reason[:300]}))
            sys.exit(1)
    print(json.dumps({"median_s": statistics.median(walls), "walls_s": walls,
                      "shapes": len(v.shapes), "phases": v.phases}))
    ''')


def _candidate(problem: str | None) -> str:
    if problem:
        return (ROOT / "kbench" / "examples" / f"{problem}.py").read_text()
    relu = (ROOT / "kbench" / "examples" / "level1" / "relu.py").read_text()
    init = "    def __init__(self):\n        super().__init__()\n"
    assert init in relu, "the shipped ReLU example changed its constructor"
    return relu.replace(init, "    def __init__(self, dim):\n        super().__init__()\n"
                        "        self.lin = nn.Linear(8192, 8192)\n", 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compare", type=Path, required=True, help="a checkout of the older tree")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--problem", help="a problem with a shipped example (default: synthetic)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kbench-overlap-"))
    problem = args.problem or str(tmp / "heavy_relu.py")
    if not args.problem:
        (tmp / "heavy_relu.py").write_text(_PROBLEM)
    cand = tmp / "candidate.py"
    cand.write_text(_candidate(args.problem))
    rows = {}
    for name, tree in (("new", ROOT), ("old", args.compare.resolve())):
        env = {**os.environ, "PYTHONPATH": str(tree) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        r = subprocess.run([sys.executable, "-c", _WORKER, problem, str(cand), args.device,
                            str(args.reps)], env=env, cwd=tmp, capture_output=True, text=True)
        try:
            rows[name] = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            rows[name] = {"error": (r.stderr or r.stdout)[-500:]}
    print(f"problem {args.problem or 'synthetic heavy ReLU'} on {args.device}, "
          f"median of {args.reps} warm verifications")
    print("| tree | median (s) | shapes | inputs and references (s) | correctness (s) |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        if "error" in row:
            print(f"| {name} | error: {row['error'][:120]} | | | |")
            continue
        ph = row["phases"]
        print(f"| {name} | {row['median_s']:.2f} | {row['shapes']} | "
              f"{ph.get('inputs_and_references', 0):.2f} | {ph.get('correctness', 0):.2f} |")
    if all("median_s" in r for r in rows.values()):
        print(f"old / new: {rows['old']['median_s'] / rows['new']['median_s']:.2f}x")
    return 0 if all("median_s" in r for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
