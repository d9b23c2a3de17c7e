"""The verifier's speed, old and new side by side in one run (issue 9's targets), on a GPU.

    python bench/bench_pipeline.py --compare .old [--reps 3] [--out results.json]

``--compare DIR`` is a checkout of the older revision (``git archive REV | tar -x -C DIR``);
each measurement below runs in a fresh process per tree, new then old, so both see the same
device and the same clocks, and a time limit cuts the old tree's figures rather than the
new one's. The old tree's warm verifications take 14-60 s each (H100, 2026-12-06), so its
warm measure covers only ``--old-problems`` (default: three level1 examples), and it runs only
the measures ``--old-only`` names (default: warm and eval). Measured per tree:

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

Progress is printed (flushed) as each measurement completes, with its seconds, and ``--out``
is rewritten after each one: a run killed at a time limit keeps every figure measured so far
(an unfinished measure is marked ``"unfinished": true``). A worker reports each finished
measurement as one JSON line on its stdout (:func:`_emit`), which is how the driver sees
them before the worker ends.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["level1/relu", "level1/softmax", "level1/matmul", "level2/gemm_bias_relu",
            "level3/mlp", "attention/gqa_causal_prefill", "kvcache/kv_int8_quant",
            "quant/w8a8_dynamic"]
CUDA_EXAMPLE = "level1/relu_cuda"
DEVICE = "cuda"  # --device; cpu runs the measures' code paths without figures worth a thing


# -- the worker: runs inside one tree ------------------------------------------------------
def _source(tree: Path, name: str) -> str:
    return (tree / "kbench" / "examples" / f"{name}.py").read_text()


def _verify(tree: Path, problem: str, example: str, store: str, timing: bool = True):  # type: ignore[no-untyped-def]
    from kbench.problems import load
    from kbench.store import Store
    from sandbox import verify

    spec = load(problem)[0]
    return verify(spec, _source(tree, example), device=DEVICE, cache=Store(store), timing=timing)


def _row(v, gpu: dict | None = None) -> dict:  # type: ignore[no-untyped-def]
    main = next((s for s in v.shapes if s.timing is not None), None)
    t = main.timing if main else None
    return {"status": v.status.value, "wall_s": v.wall_s, "phases": dict(v.phases or {}),
            "median_ms": t.median_ms if t else None,
            "count": t.count if t else None,
            # what a run-to-run offset of the median may come from
            "min_ms": t.min_ms if t else None, "iqr_ms": t.iqr_ms if t else None,
            "launch_ms": t.launch_ms if t else None,
            "calls_per_sample": t.calls_per_sample if t else None,
            **({"gpu": gpu} if gpu else {}),
            "reason": (v.reason or "")[:200]}


class _GpuState:
    """``nvidia-smi`` sampled every 50 ms while a measurement runs: SM and memory clocks,
    temperature, power and utilisation (``summary`` after the ``with`` block; empty where
    there is no nvidia-smi). A median that moves between runs of one candidate is read
    beside these."""

    FIELDS = ("sm_mhz", "mem_mhz", "temp_c", "power_w", "busy_pct")

    def __enter__(self) -> _GpuState:
        self.summary: dict[str, float] = {}
        self.proc = None
        if DEVICE == "cuda" and shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw,"
                 "utilization.gpu", "--format=csv,noheader,nounits", "-lms", "50"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        rows = []
        for line in (self.proc.communicate()[0] or "").splitlines():
            try:
                rows.append([float(x) for x in line.split(",")])
            except ValueError:
                continue  # "[N/A]" or a cut line
        rows = [r for r in rows if len(r) == len(self.FIELDS)]
        if not rows:
            return
        cols = dict(zip(self.FIELDS, zip(*rows)))
        self.summary = {
            "samples": len(rows), "sm_mhz": statistics.fmean(cols["sm_mhz"]),
            "sm_mhz_min": min(cols["sm_mhz"]), "mem_mhz": statistics.fmean(cols["mem_mhz"]),
            "temp_c_max": max(cols["temp_c"]), "power_w": statistics.fmean(cols["power_w"]),
            "busy_pct": statistics.fmean(cols["busy_pct"])}


def _emit(path: list[str], value: Any, t0: float) -> None:
    """One finished measurement of the worker: its place in the worker's result (``path``)
    and value, as one JSON line on stdout, at once (the driver shows it and writes it out
    while the worker goes on)."""
    print(json.dumps({"part": path, "value": value, "s": round(time.monotonic() - t0, 3)},
                     default=str), flush=True)


def _note(text: str, t0: float) -> None:
    """A step of the worker that is no figure of its own (baselines measured), for progress."""
    print(json.dumps({"note": text, "s": round(time.monotonic() - t0, 3)}), flush=True)


def worker(args: argparse.Namespace) -> dict:
    tree = Path(args.tree)
    out: dict = {}
    if args.what == "warm":
        for p in (args.problems.split(",") if args.problems else EXAMPLES):
            t0 = time.monotonic()
            _verify(tree, p, p, args.store)  # baselines (shared store) and caches warm
            _note(f"{p}: baselines measured, caches warm", t0)
            out[p] = []
            for _ in range(args.reps):
                t0 = time.monotonic()
                out[p].append(_row(_verify(tree, p, p, args.store)))
                _emit([p], out[p], t0)
    elif args.what == "cuda":
        for k in ("first", "second"):
            t0 = time.monotonic()
            out[k] = _row(_verify(tree, "level1/relu", CUDA_EXAMPLE, args.store))
            _emit([k], out[k], t0)
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
            _emit(["prebuilt"], out["prebuilt"], t0)
    elif args.what == "repeat":
        out = {"rows": []}
        for _ in range(5):
            t0 = time.monotonic()
            with _GpuState() as gpu:
                v = _verify(tree, "level1/softmax", "level1/softmax", args.store)
            out["rows"].append(_row(v, gpu.summary))
            _emit(["rows"], out["rows"], t0)
    elif args.what == "concurrent":
        from concurrent.futures import ThreadPoolExecutor

        alone = {}
        for p in EXAMPLES:
            t0 = time.monotonic()
            with _GpuState() as gpu:
                v = _verify(tree, p, p, args.store)
            alone[p] = _row(v, gpu.summary)
            _emit(["alone", p], alone[p], t0)
        t0 = time.monotonic()
        with _GpuState() as gpu, ThreadPoolExecutor(len(EXAMPLES)) as pool:
            together = dict(zip(EXAMPLES, pool.map(
                lambda p: _row(_verify(tree, p, p, args.store)), EXAMPLES)))
        wall = time.monotonic() - t0
        out = {"alone": alone, "together": together, "wall_s": wall,
               "busy_pct": gpu.summary.get("busy_pct"), "gpu": gpu.summary}
        _emit(["together"], together, t0)
    return out


# -- the driver ----------------------------------------------------------------------------
Progress = Callable[[str], None]


def _set(entry: dict, path: list[str], value: Any) -> None:
    for k in path[:-1]:
        entry = entry.setdefault(k, {})
    entry[path[-1]] = value


def _run(tree: Path, what: str, store: str, reps: int, entry: dict, progress: Progress,
         problems: list[str] | None = None) -> dict:
    """One worker in ``tree``: each measurement it reports goes into ``entry`` as it comes
    (``progress`` is told, so the figures are shown and written out at once); its full
    result when it ends, or ``entry`` so far with its error. ``problems`` narrows the warm
    measure."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tree)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                       if p and Path(p).resolve() != ROOT])}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", what, "--tree", str(tree),
           "--store", store, "--reps", str(reps), "--device", DEVICE] + (
               ["--problems", ",".join(problems)] if problems else [])
    final: dict | None = None
    with tempfile.TemporaryFile("w+") as err:  # the worker's stderr: its tail on a failure
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
                                cwd=tempfile.mkdtemp())
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                msg = None
            if not isinstance(msg, dict):
                if line.strip():  # something the worker's libraries printed
                    print(f"  [{what}] {line.rstrip()}", file=sys.stderr, flush=True)
                continue
            if "part" in msg:
                _set(entry, [str(k) for k in msg["part"]], msg["value"])
                progress(f"{'/'.join(str(k) for k in msg['part'])}: {msg['s']:.1f} s")
            elif "note" in msg:
                progress(f"{msg['note']}: {msg['s']:.1f} s")
            elif "result" in msg:
                final = msg["result"]
        rc = proc.wait()
        err.seek(0)
        tail = err.read()[-2000:]
    if rc != 0 or final is None:
        return {**entry, "error": f"worker exited {rc}: {tail}"}
    return final


_EVALS = ("cold store", "warm store, the server kept by the command before",
          "warm store, the command's own server (KBENCH_KEEP_SERVER=0)")


def _eval_fresh(tree: Path, store: str, progress: Progress | None = None) -> dict:
    """``kbench eval`` three times in new directories sharing ``store`` (:data:`_EVALS`):
    the first fills the store and leaves its fork server; the second finds both, as a user's
    next command does; the third finds the store but starts its own server. Servers are
    kept in a directory of this measure's own, and stopped at its end. A failed eval ends
    the measure with its reason (its wall is no figure of speed)."""
    servers = tempfile.mkdtemp(prefix="kbs-")
    env = {**os.environ, "PYTHONPATH": str(tree) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "KBENCH_SERVER_DIR": servers}
    env.pop("KBENCH_KEEP_SERVER", None)
    try:
        res = _evals(tree, store, env, progress)
        res["kept_servers"] = len(list(Path(servers).glob("fs-*/sock")))  # 0 for older trees
        return res
    finally:
        subprocess.run([sys.executable, "-m", "kbench.cli", "doctor", "--stop-servers"],
                       env=env, capture_output=True)
        shutil.rmtree(servers, ignore_errors=True)


def _evals(tree: Path, store: str, env: dict[str, str], progress: Progress | None) -> dict:
    walls: list[float] = []
    phases: dict = {}
    for i, what in enumerate(_EVALS):
        cwd = tempfile.mkdtemp()
        cand = Path(cwd) / "cand.py"
        cand.write_text(_source(tree, "level1/softmax"))
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "kbench.cli", "eval", "--problem",
                            "level1/softmax", "--candidate", str(cand), "--store", store,
                            "--device", DEVICE, "--json"],
                           env={**env, **({"KBENCH_KEEP_SERVER": "0"} if i == 2 else {})},
                           cwd=cwd, capture_output=True, text=True)
        walls.append(time.monotonic() - t0)
        if progress is not None:
            progress(f"kbench eval #{i + 1} ({what}): {walls[-1]:.1f} s, exit {r.returncode}")
        try:
            verdict = json.loads(r.stdout)
        except ValueError:
            verdict = None
        if r.returncode != 0 or not isinstance(verdict, dict) or not verdict.get("passed"):
            return {"walls_s": walls, "error": f"kbench eval #{i + 1} exited {r.returncode}: "
                    f"{(r.stderr or r.stdout)[-300:]}"}
        if i == 1:
            phases = verdict.get("phases", {})
    return {"walls_s": walls, "phases_second": phases}


def _write(path: Path | None, res: dict) -> None:
    """``res`` as ``--out``'s JSON, replaced whole (a reader never sees half a file)."""
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({f"{w}:{n}": v for (w, n), v in res.items()}, indent=2,
                              default=str))
    os.replace(tmp, path)


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", type=Path, help="a checkout of the older revision")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="warm,eval,cuda,repeat,concurrent")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--old-problems", default="level1/relu,level1/softmax,level1/matmul",
                    help="the examples the old tree's warm measure covers ('all': eight)")
    ap.add_argument("--old-only", default="warm,eval",
                    help="the measures the old tree runs (its verifications are slow; "
                         "'all': every measure --only names)")
    ap.add_argument("--problems", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda",
                    help="cuda (the figures); cpu checks the measures' code paths only")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if args.worker:
        args.what = args.worker
        print(json.dumps({"result": worker(args)}, default=str), flush=True)
        return 0
    trees = {"new": ROOT}
    if args.compare:
        trees = {"new": ROOT, "old": args.compare.resolve()}
    stores = {name: str(Path(tempfile.mkdtemp()) / f"bench-{name}.db") for name in trees}
    only = args.only.split(",")
    res: dict = {}
    start = time.monotonic()
    for what in ("warm", "eval", "cuda", "repeat", "concurrent"):
        if what not in only:
            continue
        for name, tree in trees.items():
            if name == "old" and args.old_only != "all" and what not in args.old_only.split(","):
                continue
            t0 = time.monotonic()
            entry: dict = {"unfinished": True}
            res[(what, name)] = entry

            def progress(text: str, what: str = what, name: str = name) -> None:
                print(f"[{time.monotonic() - start:6.0f} s] {what} ({name}) {text}",
                      file=sys.stderr, flush=True)
                _write(args.out, res)

            print(f"[{time.monotonic() - start:6.0f} s] {what} ({name}) started",
                  file=sys.stderr, flush=True)
            narrow = (args.old_problems.split(",") if name == "old" and what == "warm"
                      and args.old_problems != "all" else None)
            res[(what, name)] = (_eval_fresh(tree, stores[name], progress) if what == "eval"
                                 else _run(tree, what, stores[name], args.reps, entry, progress,
                                           narrow))
            res[(what, name)].pop("unfinished", None)
            _write(args.out, res)
            print(f"{what} ({name}): {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
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
        def measured(r: dict) -> list[str]:
            return [p for p in EXAMPLES if r.get(p)]

        common = [p for p in EXAMPLES
                  if all(p in (res.get(("warm", n)) or {}) for n in names)]
        for p in EXAMPLES:
            lines.append(f"| warm verification, {p} (s) | " + " | ".join(
                cell("warm", n, lambda r, p=p: f"{_med([x['wall_s'] for x in r[p]]):.2f}"
                     if r.get(p) else "-")
                for n in names) + " |")
        lines.append("| warm verification, median of the problems measured (s) | " + " | ".join(
            cell("warm", n, lambda r: f"{_med([_med([x['wall_s'] for x in r[p]]) for p in measured(r)]):.2f}"
                 f" ({len(measured(r))})")
            for n in names) + " |")
        if len(names) > 1 and common:
            lines.append(f"| warm verification, median of the {len(common)} both measured (s) | "
                         + " | ".join(cell("warm", n, lambda r: f"{_med([_med([x['wall_s'] for x in r[p]]) for p in common]):.2f}")
                                      for n in names) + " |")
        phases = sorted({k for n in names for r in [res.get(("warm", n)) or {}]
                         if "error" not in r for p in measured(r) for x in r[p]
                         for k in x["phases"]})
        for ph in phases:
            lines.append(f"| phase {ph}, median of the problems measured (s) | " + " | ".join(
                cell("warm", n, lambda r, ph=ph: f"{_med([_med([x['phases'].get(ph, 0.0) for x in r[p]]) for p in measured(r)]):.2f}")
                for n in names) + " |")
    if "eval" in only:
        lines.append("| `kbench eval`, fresh directory, warm store: server kept by the "
                     "command before / its own (s) | " + " | ".join(
                         cell("eval", n, lambda r: f"{r['walls_s'][1]:.2f} / {r['walls_s'][2]:.2f}")
                         for n in names) + " |")
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

        def runs(r: dict) -> str:  # each run's median beside the clocks it ran at
            return "; ".join(
                f"{x['median_ms']:.4f} ms" + (f" @ {x['gpu']['sm_mhz']:.0f}/{x['gpu']['mem_mhz']:.0f}"
                                              f" MHz {x['gpu']['temp_c_max']:.0f} C"
                                              if x.get("gpu") else "")
                for x in r["rows"] if x["median_ms"])
        lines.append("| the 5 medians (SM/memory clock, hottest) | " + " | ".join(
            cell("repeat", n, runs) for n in names) + " |")
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
