"""Does where an input lives move a kernel's timing? The repeat target's question.

Five verifications of level1/softmax's shipped kernel gave medians 3.2 % apart on an H100,
three of them within 0.1 % (docs/benchmarks.md §10): a run-to-run offset, not noise within a
run. One candidate cause is the placement of the 1 GB input (each verification timed one
allocation throughout); another, the GPU's clocks. This separates them in one process:
``--allocs`` inputs of the main shape, each its own allocation (all kept alive, so each has
its own addresses), timed with kbench's own rule (``sandbox.timing.time_cuda``), in
``--passes`` passes over all of them. An offset that belongs to an allocation repeats in
every pass; one that follows the clocks moves with the pass. The SM clock and temperature
are read beside each timing.

    python bench/placement_spread.py --allocs 6 --passes 2
"""

from __future__ import annotations

import argparse
import importlib.resources
import shutil
import statistics
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _clocks() -> str:
    if not shutil.which("nvidia-smi"):
        return "-"
    r = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,temperature.gpu,"
                        "power.draw", "--format=csv,noheader,nounits"],
                       capture_output=True, text=True)
    return " / ".join(x.strip() for x in r.stdout.strip().split(","))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="level1/softmax", help="a problem with a shipped example")
    ap.add_argument("--shape", default="main", help="a shape name (on a CPU: its first shape)")
    ap.add_argument("--allocs", type=int, default=6)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from kbench.problems import load
    from sandbox.timing import TimingConfig, time_cuda

    spec = load(args.problem)[0]
    shapes = spec.shapes_for(args.device)
    name = args.shape if args.shape in shapes or args.device.startswith("cuda") else next(iter(shapes))
    shape = shapes[name]
    mod = types.ModuleType("candidate")
    exec(compile(importlib.resources.files("kbench").joinpath(  # noqa: S102 - kbench's example
        f"examples/{args.problem}.py").read_text(), "candidate.py", "exec"), mod.__dict__)
    model = mod.ModelNew(*spec.make_init_inputs(shape, 0)).to(args.device)
    sets = [spec.make_inputs(shape, 1000 + i, args.device) for i in range(args.allocs)]
    ptrs = [hex(s[0].data_ptr()) for s in sets]
    cfg = TimingConfig()
    on_gpu = args.device.startswith("cuda")
    print(f"{args.problem} shape {name} {dict(shape)}, {args.allocs} allocations x "
          f"{args.passes} passes, device "
          f"{torch.cuda.get_device_name() if on_gpu else 'cpu'}, torch {torch.__version__}")
    print("| pass | alloc | address | median ms | IQR/median | samples | "
          "SM MHz / mem MHz / temp C / W after |")
    print("|---:|---:|---|---:|---:|---:|---|")
    med: dict[tuple[int, int], float] = {}
    with torch.no_grad():
        for p in range(args.passes):
            for a, xs in enumerate(sets):
                if on_gpu:
                    raw = time_cuda(lambda xs=xs: model(*xs), cfg=cfg)
                    ms = sorted(raw.event_ms)
                else:  # a smoke test: host time of one call, no protocol
                    import time

                    ms = []
                    for _ in range(3):
                        t0 = time.perf_counter()
                        model(*xs)
                        ms.append((time.perf_counter() - t0) * 1e3)
                    ms.sort()
                m = statistics.median(ms)
                q = statistics.quantiles(ms, n=4) if len(ms) >= 4 else [m, m, m]
                med[(p, a)] = m
                print(f"| {p + 1} | {a + 1} | {ptrs[a]} | {m:.4f} | {(q[2] - q[0]) / m:.2%} | "
                      f"{len(ms)} | {_clocks()} |", flush=True)
    allocs = range(args.allocs)
    for p in range(args.passes):
        row = [med[(p, a)] for a in allocs]
        print(f"pass {p + 1}: spread over allocations {(max(row) - min(row)) / min(row):.2%}")
    if args.passes > 1:
        for a in allocs:
            col = [med[(p, a)] for p in range(args.passes)]
            print(f"alloc {a + 1}: spread over passes {(max(col) - min(col)) / min(col):.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
