"""Verification throughput: verified candidates per GPU-minute for a fixed mix of honest
Triton and CUDA candidates on level1 problems, build cache cold then warm (issue 13).

    python bench/throughput.py [--gpus N] [--executor local|ray] [--repeat 4] [--out F.json]
    python bench/throughput.py --device cpu --limit 2      # the CI smoke run (interpreter)

The mix is the shipped level1 examples (``kbench/examples/level1``: relu, softmax and matmul
in Triton, relu and softmax in CUDA), each in ``--repeat`` variants that differ only by a
trailing comment, so every variant is a distinct candidate to the build cache, as an LLM's
candidates are. On a CPU device the CUDA candidates are left out (they cannot run there).

Each pass verifies the whole mix as a run does: per problem its baselines ahead of time on
the executor, CUDA candidates prebuilt in a CPU pool (``sandbox.prebuild``; ``--build-slots``,
by default a quarter of the cores as in the Runner) — both only for an in-process executor;
a remote one (Ray) measures baselines in its GPU tasks and builds CUDA candidates in tasks
that hold no GPU, as in a run — then every candidate
a job on the executor (``Executor.submit_job`` where the executor has it, else a job calling
``sandbox.job.run_job``), all submitted at once. Passes:

- ``cold``: an empty build cache (a fresh ``KBENCH_CACHE_DIR``) and no baselines;
- ``warm``: the same candidates again, builds restored and baselines cached.

Measured per pass: wall time from the first submission to the last verdict; verified
(correct) verdicts per device-minute (a device is a GPU on CUDA: wall minutes x GPUs used);
the verdicts' statuses and the first reason of any that is not correct; per device the jobs
it ran; the sum of each verification phase; and, on CUDA, the GPU busy share from the driver
(NVML ``utilization.gpu``: the share of each sample period in which a kernel ran) sampled
every 100 ms per GPU through ``pynvml`` (nvidia-ml-py), else ``nvidia-smi -lms 100``.

``--per-gpu-timing`` then verifies three candidates (Triton relu and matmul, CUDA softmax) on
each GPU in turn, nothing else running, and reports per timed shape how far the GPUs'
medians differ against the timings' own spread (issue 15).

``--gpus N`` uses the first N visible GPUs (it narrows ``CUDA_VISIBLE_DEVICES`` before CUDA
starts, so every executor, Ray's included, sees only those). Prints a table; writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

# example file -> problem; the order is the order candidates are submitted in
MIX = [("level1/relu.py", "level1/relu"), ("level1/relu_cuda.py", "level1/relu"),
       ("level1/softmax.py", "level1/softmax"), ("level1/softmax_cuda.py", "level1/softmax"),
       ("level1/matmul.py", "level1/matmul")]
SAMPLE_S = 0.1


# -- the GPU busy share, from the driver -----------------------------------------------------
def _nvml_uuids(n: int) -> list[str]:
    """The NVML UUIDs (``GPU-...``) of torch's ``cuda:0 .. cuda:n-1``: from torch where it
    tells them, else ``nvidia-smi``'s table read through ``CUDA_VISIBLE_DEVICES`` indices;
    ``[]`` (no busy share) if neither can."""
    try:
        import torch

        out = []
        for i in range(n):
            uuid = str(torch.cuda.get_device_properties(i).uuid)
            out.append(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
        return out
    except Exception:  # noqa: BLE001 - an older torch: ask the driver's tool
        pass
    smi = shutil.which("nvidia-smi")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    wanted = [x.strip() for x in visible.split(",")] if visible else [str(i) for i in range(n)]
    if smi is None:
        return []
    r = subprocess.run([smi, "--query-gpu=index,uuid", "--format=csv,noheader"],
                       capture_output=True, text=True, timeout=30)
    table = dict(tuple(x.strip() for x in line.split(",", 1)) for line in r.stdout.splitlines()
                 if "," in line)
    table.update({u: u for u in table.values()})  # CUDA_VISIBLE_DEVICES may name UUIDs
    got = [table.get(w) for w in wanted[:n]]
    return [u for u in got if u] if all(got) else []


class BusySampler:
    """Samples each GPU's ``utilization.gpu`` every ``period_s`` while running.

    Uses ``pynvml`` where it imports, else an ``nvidia-smi -lms`` child; ``how`` says which
    (or why neither could)."""

    def __init__(self, uuids: list[str], period_s: float = SAMPLE_S) -> None:
        self.uuids = uuids
        self.period_s = period_s
        self.samples: dict[str, list[float]] = {u: [] for u in uuids}
        self.how = "none"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._smi: subprocess.Popen[str] | None = None

    def start(self) -> BusySampler:
        if not self.uuids:
            self.how = "none (the GPUs' NVML UUIDs are unknown)"
            return self
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = {u: pynvml.nvmlDeviceGetHandleByUUID(u) for u in self.uuids}
            self.how = "nvml"
            self._thread = threading.Thread(target=self._nvml, args=(pynvml, handles),
                                            daemon=True)
        except Exception as e:  # noqa: BLE001 - no pynvml or no driver: try nvidia-smi
            smi = shutil.which("nvidia-smi")
            if smi is None:
                self.how = f"none (pynvml: {type(e).__name__}: {e}; no nvidia-smi)"
                return self
            self.how = "nvidia-smi"
            self._smi = subprocess.Popen(
                [smi, "--query-gpu=uuid,utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", str(int(self.period_s * 1000))],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._read_smi, daemon=True)
        self._thread.start()
        return self

    def _nvml(self, pynvml: Any, handles: dict[str, Any]) -> None:
        while not self._stop.wait(self.period_s):
            for u, h in handles.items():
                self.samples[u].append(float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu))

    def _read_smi(self) -> None:
        assert self._smi is not None and self._smi.stdout is not None
        for line in self._smi.stdout:
            uuid, _, util = (x.strip() for x in line.partition(","))
            if uuid in self.samples and util.replace(".", "", 1).isdigit():
                self.samples[uuid].append(float(util))

    def stop(self) -> dict[str, dict[str, Any]]:
        """Per UUID: the mean busy share (0..1, None without samples) and the sample count."""
        self._stop.set()
        if self._smi is not None:
            self._smi.terminate()
            self._smi.wait(10)
        if self._thread is not None:
            self._thread.join(10)
        return {u: {"busy_share": statistics.fmean(s) / 100 if s else None, "samples": len(s)}
                for u, s in self.samples.items()}


# -- the mix -----------------------------------------------------------------------------
def mix(device: str, repeat: int, limit: int | None) -> tuple[list[dict[str, str]], list[str]]:
    """The candidates of one pass (``example``, ``problem``, ``backend``, ``source``), and
    what was left out and why."""
    from sandbox.policy import check_source

    root = importlib.resources.files("kbench").joinpath("examples")
    out, left = [], []
    for v in range(repeat):
        for example, problem in MIX:
            source = root.joinpath(example).read_text()
            backend = check_source(source).backend
            if backend == "cuda" and not device.startswith("cuda"):
                if v == 0:
                    left.append(f"{example}: a CUDA candidate needs a GPU")
                continue
            out.append({"example": example, "variant": str(v), "problem": problem,
                        "backend": backend,
                        "source": f"{source.rstrip()}\n# kbench throughput variant {v}\n"})
    return (out[:limit] if limit is not None else out), left


# -- one pass ----------------------------------------------------------------------------
def run_pass(name: str, ex: Any, cands: list[dict[str, str]], specs: dict[str, Any],
             cache: Any, device: str, gpus: int, uuids: list[str], slots: int
             ) -> dict[str, Any]:
    from sandbox import measure_baselines
    from sandbox.job import Candidate, Job
    from sandbox.prebuild import prebuild
    from sandbox.verdict import Status, Verdict

    on_gpu = device.startswith("cuda")
    remote = getattr(ex, "remote", False)  # as the Runner: built and measured where it runs
    builds = threading.Semaphore(slots)
    built: Counter[str] = Counter()
    build_s = [0.0]
    mu = threading.Lock()
    # an executor that builds in tasks of its own (Ray) counts what they did
    before = (Counter(getattr(ex, "builds", None) or {}), float(getattr(ex, "build_wall_s", 0.0)))

    def submit(job: Job) -> Future[Any]:
        if hasattr(ex, "submit_job"):
            return ex.submit_job(job, cache=cache)
        from dataclasses import replace

        from sandbox.job import run_job

        return ex.submit(lambda d: run_job(replace(job, device=d), cache))

    sampler = BusySampler(uuids).start() if on_gpu else None
    done = [0]
    print(f"pass {name}: {len(cands)} candidates on {list(ex.devices)} "
          f"({getattr(ex, 'jobs_per_device', '?')} jobs per device)", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    ahead: dict[str, Future[Any]] = {}
    if on_gpu and not remote:  # as the Runner: baselines first
        for key, spec in specs.items():
            ahead[key] = ex.submit(lambda d, s=spec: measure_baselines(s, cache, device=d))

    def one(c: dict[str, str]) -> Any:
        if on_gpu and c["backend"] == "cuda" and not remote:
            with builds:
                got = prebuild(c["source"], device)
            with mu:
                built[got.state] += 1
                build_s[0] += got.wall_s
        if c["problem"] in ahead:
            ahead[c["problem"]].exception()  # a failure: the verification measures them
        spec = specs[c["problem"]]
        job = Job(str(spec.path), spec.source_hash, Candidate(c["source"], c["backend"]))
        t_sub = time.monotonic()
        try:
            v = submit(job).result()
        except Exception as e:  # noqa: BLE001 - a harness fault is a figure, not the end
            v = Verdict(problem=spec.key, status=Status.RUNTIME_ERROR, device="(raised)",
                        backend=c["backend"], reason=f"the job raised {type(e).__name__}: {e}")
        now = time.monotonic()
        with mu:
            done[0] += 1
            # submitted -> verdict against the verdict's own wall: the rest is queueing and
            # the executor's own cost (a Ray task's worker start and imports)
            print(f"{name:5s} {now - t0:7.1f} s  {done[0]:3d}/{len(cands)}  "
                  f"{c['example']}#{c['variant']:<2}  {v.status.value:13s} verdict "
                  f"{v.wall_s or 0.0:6.2f} s, submitted {now - t_sub:6.2f} s ago",
                  file=sys.stderr, flush=True)
        return v

    with ThreadPoolExecutor(max(1, len(cands)), thread_name_prefix="throughput") as pool:
        verdicts = list(pool.map(one, cands))
    wall = time.monotonic() - t0
    busy = sampler.stop() if sampler else {}

    devices = list(ex.devices)
    n_dev = gpus if on_gpu else len(devices)  # GPUs used, whatever the executor names
    statuses = Counter(v.status.value for v in verdicts)
    verified = sum(v.passed for v in verdicts)
    phases: Counter[str] = Counter()
    for v in verdicts:
        phases.update({k: float(x) for k, x in (v.phases or {}).items()})
    jobs = Counter({d: 0 for d in devices}) + Counter(v.device for v in verdicts)
    per_device: dict[str, dict[str, Any]] = {
        d: {"jobs": jobs[d]} for d in [*devices, *sorted(set(jobs) - set(devices))]}
    for i, u in enumerate(uuids):
        per_device.setdefault(f"cuda:{i}", {}).update(busy.get(u, {}), uuid=u)
    shares = [b["busy_share"] for b in busy.values() if b["busy_share"] is not None]
    return {
        "pass": name, "jobs_per_device": getattr(ex, "jobs_per_device", None),
        "wall_s": round(wall, 3), "candidates": len(cands),
        "verified": verified, "statuses": dict(statuses),
        "not_verified": [f"{c['example']}#{c['variant']}: {v.status.value}: "
                         f"{(v.reason or '').splitlines()[0][:200] if v.reason else ''}"
                         for c, v in zip(cands, verdicts) if not v.passed],
        "devices": n_dev,
        "device_minutes": round(wall / 60 * n_dev, 4),
        "verified_per_device_minute": round(verified / (wall / 60 * n_dev), 3),
        "timed": sum(v.timing_available for v in verdicts),
        "gpu_busy_share": round(statistics.fmean(shares), 4) if shares else None,
        "busy_sampler": sampler.how if sampler else None,
        "per_device": per_device,
        "builds": _pass_builds(built, build_s[0], slots, ex, before),
        "phase_s": {k: round(x, 3) for k, x in sorted(phases.items())},
        "mean_verdict_wall_s": round(statistics.fmean(v.wall_s or 0.0 for v in verdicts), 3)
        if verdicts else None,
    }


def _pass_builds(built: Counter[str], wall_s: float, slots: int, ex: Any,
                 before: tuple[Counter[str], float]) -> dict[str, Any]:
    """The pass's CUDA builds: the prebuilds made here (an in-process executor), else what
    the executor's own build tasks did during the pass (``executor_tasks``: Ray's)."""
    theirs = getattr(ex, "builds", None)
    if theirs is None:
        return {**dict(built), "wall_s": round(wall_s, 3), "slots": slots}
    delta = Counter(theirs)
    delta.subtract(before[0])
    return {**{k: v for k, v in delta.items() if v},
            "wall_s": round(float(getattr(ex, "build_wall_s", 0.0)) - before[1], 3),
            "slots": getattr(ex, "_build_slots", None), "executor_tasks": True}


# -- one candidate's timing on each GPU in turn (issue 15) ---------------------------------
PER_GPU = ["level1/relu.py", "level1/softmax_cuda.py", "level1/matmul.py"]


def per_gpu_timing(devices: list[str], cache: Any) -> dict[str, Any]:
    """Three candidates verified on each device in turn, nothing else running: per timed
    shape the median on each device, their difference ``(max - min) / min`` and the largest
    spread (IQR / median) of those timings, in percent."""
    import torch

    from kbench.problems import load
    from sandbox import verify

    root = importlib.resources.files("kbench").joinpath("examples")
    rows, statuses = [], {}
    for example, problem in MIX:
        if example not in PER_GPU:
            continue
        source = root.joinpath(example).read_text()
        if "_cuda" in example and not devices[0].startswith("cuda"):
            continue
        spec = load(problem)[0]
        medians: dict[str, dict[str, tuple[float, float]]] = {}
        for d in devices:
            # the parent's work that names no index (a synchronize) must wait on this GPU
            with torch.cuda.device(d) if d.startswith("cuda") else contextlib.nullcontext():
                v = verify(spec, source, device=d, cache=cache)
            statuses[f"{example} on {d}"] = v.status.value
            medians[d] = {sh.name: (sh.timing.median_ms, sh.timing.spread)
                          for sh in v.shapes if sh.timing is not None}
        for shape in sorted(set.intersection(*(set(m) for m in medians.values()))):
            ms = {d: medians[d][shape][0] for d in devices}
            rows.append({"candidate": example, "shape": shape,
                         "median_ms": {d: round(x, 6) for d, x in ms.items()},
                         "diff_pct": round(100 * (max(ms.values()) / min(ms.values()) - 1), 3),
                         "spread_pct": round(100 * max(medians[d][shape][1] for d in devices),
                                             3)})
    diffs = [r["diff_pct"] for r in rows]
    return {"devices": devices, "statuses": statuses, "shapes": rows,
            "max_diff_pct": max(diffs) if diffs else None,
            "beyond_spread": [f"{r['candidate']} {r['shape']}" for r in rows
                              if r["diff_pct"] > r["spread_pct"]]}


# -- the driver --------------------------------------------------------------------------
def _narrow_gpus(n: int) -> None:
    """Keep the first ``n`` visible GPUs (before CUDA starts in this process)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [x for x in visible.split(",") if x.strip()] if visible is not None \
        else [str(i) for i in range(n)]
    if len(ids) < n:
        raise SystemExit(f"--gpus {n}: only {len(ids)} visible (CUDA_VISIBLE_DEVICES={visible})")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids[:n])


def _versions(device: str) -> dict[str, Any]:
    import torch

    try:
        import triton

        tv = triton.__version__
    except ImportError:
        tv = None
    from sandbox.fingerprint import fingerprint

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=Path(__file__).parent)
    fp = fingerprint(device)
    return {"torch": torch.__version__, "triton": tv, "python": platform.python_version(),
            "gpu": fp.get("gpu"), "driver": fp.get("driver"), "cuda": fp.get("cuda"),
            "commit": head.stdout.strip() or None}


def _table(res: dict[str, Any]) -> str:
    unit = "GPU" if res["device"].startswith("cuda") else "device"
    rows = [f"| pass | executor | {unit}s | candidates | verified | wall s | "
            f"verified / {unit}-min | GPU busy (driver) | builds |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for p in res["passes"].values():
        busy = f"{p['gpu_busy_share']:.0%}" if p["gpu_busy_share"] is not None else "n/a"
        builds = ", ".join(f"{k} {v}" for k, v in p["builds"].items()
                           if k not in ("wall_s", "slots", "executor_tasks")) or "-"
        if p["builds"].get("executor_tasks") and builds != "-":
            builds += " (in the executor's tasks)"
        rows.append(f"| {p['pass']} | {res['executor']} | {p['devices']} | {p['candidates']} | "
                    f"{p['verified']} | {p['wall_s']:.1f} | "
                    f"{p['verified_per_device_minute']:.2f} | {busy} | {builds} |")
    rows += ["", f"| pass | {unit} | jobs | GPU busy (driver) | samples |", "|---|---|---:|---:|---:|"]
    for p in res["passes"].values():
        for d, u in p["per_device"].items():
            share = u.get("busy_share")
            rows.append(f"| {p['pass']} | {d} | {u.get('jobs', 0)} | "
                        f"{f'{share:.0%}' if share is not None else 'n/a'} | "
                        f"{u.get('samples', '-')} |")
    per = res.get("per_gpu_timing")
    if per and per["shapes"]:
        rows += ["", "| candidate | shape | " + " | ".join(f"{d} ms" for d in per["devices"])
                 + " | diff % | spread % |", "|---|---|" + "---:|" * (len(per["devices"]) + 2)]
        for r in per["shapes"]:
            rows.append(f"| {r['candidate']} | {r['shape']} | "
                        + " | ".join(f"{r['median_ms'][d]:.4f}" for d in per["devices"])
                        + f" | {r['diff_pct']:.2f} | {r['spread_pct']:.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default=None, help="cuda (default where a GPU is) or cpu")
    ap.add_argument("--gpus", type=int, default=None, help="use the first N visible GPUs")
    ap.add_argument("--executor", default="local", help="a registered executor's name")
    ap.add_argument("--executor-option", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to the executor (a JSON value, else a string); repeatable")
    ap.add_argument("--jobs-per-device", type=int, default=2)
    ap.add_argument("--build-slots", type=int, default=None,
                    help="concurrent CUDA prebuilds (default: a quarter of the cores)")
    ap.add_argument("--repeat", type=int, default=4, help="variants of each example")
    ap.add_argument("--limit", type=int, default=None, help="first N candidates of the mix")
    ap.add_argument("--passes", default="cold,warm", help="cold, warm or both, in order")
    ap.add_argument("--per-gpu-timing", action="store_true",
                    help="after the passes, time three candidates on each GPU in turn")
    ap.add_argument("--warm-jobs", default="", metavar="N[,M...]",
                    help="after the passes, one more warm pass for each of these jobs per "
                         "device, each with an executor of its own (pass warm_jN): does "
                         "another job per GPU keep it busier?")
    ap.add_argument("--out", default="throughput.json")
    args = ap.parse_args(argv)
    passes = [p.strip() for p in args.passes.split(",") if p.strip()]
    if not passes or set(passes) - {"cold", "warm"}:
        ap.error("--passes takes cold and/or warm")
    try:
        warm_jobs = [int(x) for x in args.warm_jobs.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--warm-jobs {args.warm_jobs!r}: expected whole numbers, comma-separated")
    if any(j < 1 for j in warm_jobs):
        ap.error("--warm-jobs: each value is at least 1")
    if args.gpus is not None:
        if args.device == "cpu":
            ap.error("--gpus needs a CUDA device")
        _narrow_gpus(args.gpus)

    import torch

    from kbench.executors import make_executor
    from kbench.problems import load
    from kbench.runner import build_slots  # the Runner's rule: a quarter of the usable cores
    from sandbox import MemoryCache

    on_gpu = torch.cuda.is_available() and args.device != "cpu"
    if args.device and args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible")
    device = "cuda" if on_gpu else "cpu"
    cands, left_out = mix(device, args.repeat, args.limit)
    if not cands:
        raise SystemExit("the mix is empty (see --limit and --device)")
    specs = {c["problem"]: load(c["problem"])[0] for c in cands}
    n_gpus = torch.cuda.device_count() if on_gpu else 0
    if args.gpus is not None and n_gpus != args.gpus:
        raise SystemExit(f"--gpus {args.gpus}: torch sees {n_gpus} GPUs")
    uuids = _nvml_uuids(n_gpus) if on_gpu else []

    # None: every GPU; jobs_per_device as a run passes it (Ray: each task 1/N of a GPU)
    options: dict[str, Any] = {"devices": None if on_gpu else ["cpu"],
                               "jobs_per_device": args.jobs_per_device}
    for opt in args.executor_option:
        key, eq, value = opt.partition("=")
        if not eq:
            ap.error(f"--executor-option {opt!r}: expected KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    cache_dir = Path(tempfile.mkdtemp(prefix="kbench-throughput-"))
    os.environ["KBENCH_CACHE_DIR"] = str(cache_dir)  # cold: empty; the warm pass reuses it
    os.environ.pop("KBENCH_BUILD_CACHE", None)
    cache = MemoryCache()
    res: dict[str, Any] = {
        "device": device, "executor": args.executor, "gpus": n_gpus,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "jobs_per_device": args.jobs_per_device, "repeat": args.repeat,
        "mix": [f"{c['example']}#{c['variant']}" for c in cands], "left_out": left_out,
        "sample_period_s": SAMPLE_S, "nvml_uuids": uuids, "versions": _versions(device), "passes": {}}
    try:
        with make_executor(args.executor, **options) as ex:
            res["devices"] = list(ex.devices)
            for name in passes:
                if name == "cold":  # no builds, no baselines
                    shutil.rmtree(cache_dir, ignore_errors=True)
                    cache_dir.mkdir()
                    cache = MemoryCache()
                res["passes"][name] = run_pass(name, ex, cands, specs, cache, device, n_gpus,
                                               uuids, args.build_slots or build_slots())
                # each pass written as it ends: a step cut by its time limit keeps the first
                Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
        for j in warm_jobs:  # the caches as the passes left them; the executor anew
            with make_executor(args.executor, **{**options, "jobs_per_device": j}) as ex:
                name = f"warm_j{j}"
                res["passes"][name] = run_pass(name, ex, cands, specs, cache, device, n_gpus,
                                               uuids, args.build_slots or build_slots())
                Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
        if args.per_gpu_timing:  # the executor is idle: each GPU alone in turn
            res["per_gpu_timing"] = per_gpu_timing(
                [f"cuda:{i}" for i in range(n_gpus)] if on_gpu else ["cpu"], cache)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    print(_table(res))
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return res


if __name__ == "__main__":
    main()
