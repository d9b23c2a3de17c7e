"""The verifier's speed, old and new side by side in one run (issue 9's targets), on a GPU.

    python bench/bench_pipeline.py --compare .old [--reps 3] [--out results.json]

``--compare DIR`` is a checkout of the older revision (``git archive REV | tar -x -C DIR``);
each measurement below runs in a fresh process per tree, alternating old and new, so both
see the same device and the same clocks. Measured per tree:

1. warm verification of the eight Triton example problems (baselines already cached in a
   shared store): median wall per verification and its phases;
2. ``kbench eval`` in a fresh directory with a warm store (a new process, a new cwd);
3. a CUDA candidate verified twice: the second one's wall (the build cache's effect);
4. repeatability: 5 verifications of one candidate, spread of the medians;
5. concurrency: the eight candidates each timed alone, then all eight at once in threads;
   the largest change of a candidate's median from its time alone, and the GPU's busy share
   (``nvidia-smi`` utilization sampled every 100 ms) over the concurrent run.

Only ``kbench.problems.load``, ``sandbox.verify`` and ``kbench.store.Store`` are used by the
worker (and ``sandbox.prebuild`` where the tree has it), so the same worker code runs against
either tree. Each tree has its own store (the schemas may differ), so each measures its own
baselines once before its warm figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["level1/relu", "level1/softmax", "level1/matmul", "level2/gemm_bias_relu",
            "level3/mlp", "attention/gqa_causal_prefill", "kvcache/kv_int8_quant",
            "quant/w8a8_dynamic"]
CUDA_EXAMPLE = "level1/relu_cuda"


# -- the worker: runs inside one tree ------------------------------------------------------
def _source(tree: Path, name: str) -> str:
    return (tree / "kbench" / "examples" / f"{name}.py").read_text()


def _verify(tree: Path, problem: str, example: str, store: str, timing: bool = True):  # type: ignore[no-untyped-def]
    from kbench.problems import load
    from kbench.store import Store
    from sandbox import verify

    spec = load(problem)[0]
    return verify(spec, _source(tree, example), device="cuda", cache=Store(store), timing=timing)


def _row(v) -> dict:  # type: ignore[no-untyped-def]
    main = next((s for s in v.shapes if s.timing is not None), None)
    return {"status": v.status.value, "wall_s": v.wall_s, "phases": dict(v.phases or {}),
            "median_ms": main.timing.median_ms if main else None,
            "count": main.timing.count if main else None,
            "reason": (v.reason or "")[:200]}


def worker(args: argparse.Namespace) -> dict:
    tree = Path(args.tree)
    out: dict = {}
    if args.what == "warm":
        for p in EXAMPLES:
            _verify(tree, p, p, args.store)  # baselines (shared store) and caches warm
            out[p] = [_row(_verify(tree, p, p, args.store)) for _ in range(args.reps)]
    elif args.what == "cuda":
        out = {"first": _row(_verify(tree, "level1/relu", CUDA_EXAMPLE, args.store)),
               "second": _row(_verify(tree, "level1/relu", CUDA_EXAMPLE, args.store))}
        try:  # built ahead on CPU cores, then verified (a new source: nothing cached yet)
            from sandbox.prebuild import prebuild
        except ImportError:
            prebuild = None
        if prebuild is not None:
            from kbench.problems import load
            from kbench.store import Store
            from sandbox import verify

            src = _source(tree, CUDA_EXAMPLE) + "\n# a new source: a new build\n"
            t0 = time.monotonic()
            pb = prebuild(src, "cuda")
            t_pb = time.monotonic() - t0
            v = verify(load("level1/relu")[0], src, device="cuda", cache=Store(args.store))
            out["prebuilt"] = {"prebuild_s": t_pb, "state": pb.state, "why": pb.why,
                               "then": _row(v)}
    elif args.what == "repeat":
        out = {"rows": [_row(_verify(tree, "level1/softmax", "level1/softmax", args.store))
                        for _ in range(5)]}
    elif args.what == "concurrent":
        from concurrent.futures import ThreadPoolExecutor

        alone = {p: _row(_verify(tree, p, p, args.store)) for p in EXAMPLES}
        mon = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu",
                                "--format=csv,noheader,nounits", "-lms", "100"],
                               stdout=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        with ThreadPoolExecutor(len(EXAMPLES)) as pool:
            together = dict(zip(EXAMPLES, pool.map(
                lambda p: _row(_verify(tree, p, p, args.store)), EXAMPLES)))
        wall = time.monotonic() - t0
        mon.terminate()
        util = [float(x) for x in (mon.communicate()[0] or "").split() if x.strip().isdigit()]
        out = {"alone": alone, "together": together, "wall_s": wall,
               "busy_pct": statistics.fmean(util) if util else None}
    return out


# -- the driver ----------------------------------------------------------------------------
def _run(tree: Path, what: str, store: str, reps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tree)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                       if p and Path(p).resolve() != ROOT])}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", what, "--tree", str(tree),
           "--store", store, "--reps", str(reps)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.mkdtemp())
    if r.returncode != 0:
        return {"error": r.stderr[-2000:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _eval_fresh(tree: Path, store: str) -> dict:
    """``kbench eval`` twice in new directories sharing ``store``: the second is the figure."""
    env = {**os.environ, "PYTHONPATH": str(tree) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    walls = []
    for _ in range(2):
        cwd = tempfile.mkdtemp()
        cand = Path(cwd) / "cand.py"
        cand.write_text(_source(tree, "level1/softmax"))
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "kbench.cli", "eval", "level1/softmax",
                            str(cand), "--store", store, "--json"],
                           env=env, cwd=cwd, capture_output=True, text=True)
        walls.append(time.monotonic() - t0)
        try:
            phases = json.loads(r.stdout).get("phases", {})
        except ValueError:
            phases = {"error": r.stderr[-300:]}
    return {"walls_s": walls, "phases_second": phases}


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", type=Path, help="a checkout of the older revision")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="warm,eval,cuda,repeat,concurrent")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.what = args.worker
        print(json.dumps(worker(args), default=str))
        return 0
    trees = {"new": ROOT}
    if args.compare:
        trees = {"old": args.compare.resolve(), "new": ROOT}
    stores = {name: str(Path(tempfile.mkdtemp()) / f"bench-{name}.db") for name in trees}
    only = args.only.split(",")
    res: dict = {}
    for what in ("warm", "eval", "cuda", "repeat", "concurrent"):
        if what not in only:
            continue
        for name, tree in trees.items():
            t0 = time.monotonic()
            res[(what, name)] = (_eval_fresh(tree, stores[name]) if what == "eval"
                                 else _run(tree, what, stores[name], args.reps))
            print(f"{what} ({name}): {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    if args.out:
        args.out.write_text(json.dumps({f"{w}:{n}": v for (w, n), v in res.items()},
                                       indent=2, default=str))
    _report(res, list(trees), only)
    return 0


def _report(res: dict, names: list[str], only: list[str]) -> None:
    head = "| measure | " + " | ".join(names) + " |"
    lines = [head, "|---|" + "---:|" * len(names)]

    def cell(what: str, n: str, fn) -> str:  # type: ignore[no-untyped-def]
        r = res.get((what, n))
        if r is None:
            return "-"
        if "error" in r:
            return "error"
        try:
            return fn(r)
        except (KeyError, TypeError, ValueError, StopIteration):
            return "?"

    if "warm" in only:
        for p in EXAMPLES:
            lines.append(f"| warm verification, {p} (s) | " + " | ".join(
                cell("warm", n, lambda r, p=p: f"{_med([x['wall_s'] for x in r[p]]):.2f}")
                for n in names) + " |")
        lines.append("| warm verification, median of the 8 (s) | " + " | ".join(
            cell("warm", n, lambda r: f"{_med([_med([x['wall_s'] for x in r[p]]) for p in EXAMPLES]):.2f}")
            for n in names) + " |")
        phases = sorted({k for n in names for r in [res.get(("warm", n)) or {}]
                         if "error" not in r for p in r for x in r[p] for k in x["phases"]})
        for ph in phases:
            lines.append(f"| phase {ph}, median of the 8 (s) | " + " | ".join(
                cell("warm", n, lambda r, ph=ph: f"{_med([_med([x['phases'].get(ph, 0.0) for x in r[p]]) for p in EXAMPLES]):.2f}")
                for n in names) + " |")
    if "eval" in only:
        lines.append("| `kbench eval`, fresh directory, warm store (s) | " + " | ".join(
            cell("eval", n, lambda r: f"{r['walls_s'][1]:.2f}") for n in names) + " |")
    if "cuda" in only:
        lines.append("| CUDA candidate, first / re-verified (s) | " + " | ".join(
            cell("cuda", n, lambda r: f"{r['first']['wall_s']:.1f} / {r['second']['wall_s']:.2f}")
            for n in names) + " |")
        lines.append("| CUDA candidate built ahead on CPU: prebuild / then verified (s) | "
                     + " | ".join(cell("cuda", n, lambda r: (
                         f"{r['prebuilt']['prebuild_s']:.1f} ({r['prebuilt']['state']}) / "
                         f"{r['prebuilt']['then']['wall_s']:.2f}") if "prebuilt" in r else "-")
                         for n in names) + " |")
    if "repeat" in only:
        def spread(r: dict) -> str:
            ms = [x["median_ms"] for x in r["rows"]]
            return f"{100 * (max(ms) - min(ms)) / _med(ms):.2f}%"
        lines.append("| 5 verifications of level1/softmax: spread of medians | " + " | ".join(
            cell("repeat", n, spread) for n in names) + " |")
    if "concurrent" in only:
        def worst(r: dict) -> str:
            d = [abs(r["together"][p]["median_ms"] / r["alone"][p]["median_ms"] - 1)
                 for p in EXAMPLES if r["alone"][p]["median_ms"] and r["together"][p]["median_ms"]]
            return f"{100 * max(d):.1f}%"
        lines.append("| 8 at once: largest change of a median vs alone | " + " | ".join(
            cell("concurrent", n, worst) for n in names) + " |")
        lines.append("| 8 at once: wall (s) / GPU busy share | " + " | ".join(
            cell("concurrent", n, lambda r: f"{r['wall_s']:.1f} / {r['busy_pct'] or 0:.0f}%")
            for n in names) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
