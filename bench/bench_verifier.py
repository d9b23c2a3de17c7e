"""Benchmarks of the verifier itself, on a CUDA GPU.

1. Agreement: kbench's timing protocol vs ``triton.testing.do_bench`` (median) on the same
   reference ops, in one process, one after the other (target: within 5%).
2. Repeatability: the same candidate verified 5 times; spread of the medians.
3. Overhead: wall time of one verification with warm baselines, minus the candidate's own
   timed run time (target: at most 10 s on an H100).

    python bench/bench_verifier.py [--out results.json]
    python bench/bench_verifier.py --compare OLD_CHECKOUT [...]   # = bench/bench_pipeline.py
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import triton.testing

from kbench.problems import load
from sandbox import MemoryCache, verify
from sandbox.fingerprint import fingerprint
from sandbox.timing import TimingConfig, summarize, time_cuda


def _ops() -> dict[str, object]:
    """Reference ops from 0.05 to 2 ms."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    s = torch.randn(4096, 32768, device="cuda")
    r = torch.randn(16, 1 << 20, device="cuda")
    ln = torch.nn.LayerNorm(4096, device="cuda", dtype=torch.bfloat16)
    h = torch.randn(16384, 4096, device="cuda", dtype=torch.bfloat16)
    return {
        "bf16 matmul 8192^3": lambda: a @ b,
        "softmax fp32 [4096, 32768]": lambda: torch.softmax(s, -1),
        "relu fp32 [16, 2^20]": lambda: torch.relu(r),
        "layernorm bf16 [16384, 4096]": lambda: ln(h),
    }


def agreement(reps: int = 3) -> list[dict[str, object]]:
    rows = []
    cfg = TimingConfig(budget_s=2.0, target_rse=0.002, max_reps=2000)
    for name, fn in _ops().items():
        ours, theirs = [], []
        for _ in range(reps):  # interleave to share any drift of clocks between both
            ours.append(summarize(time_cuda(fn, cfg=cfg).event_ms)["median_ms"])
            theirs.append(triton.testing.do_bench(fn, warmup=50, rep=500, return_mode="median"))
        o, t = statistics.median(ours), statistics.median(theirs)
        rows.append({"op": name, "kbench_ms": o, "do_bench_ms": t, "ratio": o / t})
    return rows


def repeatability(n: int = 5) -> dict[str, object]:
    spec = load("level1/softmax")[0]
    src = importlib.resources.files("kbench").joinpath("examples/level1/softmax.py").read_text()
    cache = MemoryCache()
    verify(spec, src, device="cuda", cache=cache)  # warm: baselines + device facts
    medians, speedups, walls, own, phases = [], [], [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        v = verify(spec, src, device="cuda", cache=cache)
        walls.append(time.perf_counter() - t0)
        assert v.passed, v.reason
        phases.append(v.phases)
        main = next(s for s in v.shapes if s.name == "main")
        medians.append(main.timing.median_ms)
        speedups.append(v.speedup_eager)
        # the candidate's own run time: every timed call (warm-up included approximately)
        own.append(sum(s.timing.mean_ms * s.timing.count for s in v.shapes if s.timing) / 1e3)
    lo, hi, med = min(medians), max(medians), statistics.median(medians)
    return {
        "problem": spec.key, "medians_ms": medians, "spread_pct": 100 * (hi - lo) / med,
        "speedup_eager": speedups, "wall_s": walls, "own_run_s": own,
        "overhead_s": [w - o for w, o in zip(walls, own)], "phases": phases,
    }


def main() -> None:
    if any(a.startswith("--compare") for a in sys.argv[1:]):
        # issue 9's old-vs-new comparison lives in bench_pipeline.py
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_pipeline

        raise SystemExit(bench_pipeline.main())
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    fp = fingerprint("cuda")
    rep = repeatability()
    agr = agreement()
    result = {"fingerprint": fp, "agreement": agr, "repeatability": rep}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    print(f"\ndevice: {fp['gpu']}  torch {fp['torch']}  triton {fp['triton']}  "
          f"CUDA {fp['cuda']}  driver {fp['driver']}")
    print("\n| op | kbench median ms | do_bench median ms | ratio |\n|---|---|---|---|")
    for r in agr:
        print(f"| {r['op']} | {r['kbench_ms']:.4f} | {r['do_bench_ms']:.4f} | {r['ratio']:.3f} |")
    print(f"\nrepeatability ({rep['problem']}, 5 verifications): medians "
          f"{', '.join(f'{m:.4f}' for m in rep['medians_ms'])} ms; spread {rep['spread_pct']:.2f}%")
    print(f"speedup vs eager: {', '.join(f'{s:.3f}' for s in rep['speedup_eager'])}")
    print(f"verification wall s (warm baselines): {', '.join(f'{w:.2f}' for w in rep['wall_s'])}")
    print(f"overhead beyond the candidate's own timed runs, s: "
          f"{', '.join(f'{o:.2f}' for o in rep['overhead_s'])} (target <= 10)")
    print("phases of the last verification, s: " + ", ".join(
        f"{k} {v:.2f}" for k, v in rep["phases"][-1].items()))


if __name__ == "__main__":
    main()
