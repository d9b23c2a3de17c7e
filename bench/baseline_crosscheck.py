"""kbench's eager and torch.compile baselines against an independent measurement (issue 17).

    python bench/baseline_crosscheck.py [--problems a,b,...] [--json out.json]

For each problem's main shape (``--shape NAME`` another):

* **kbench**: :func:`sandbox.measure_baselines` (the verifier's own children and timing
  protocol: fresh input sets, L2 flushed, the sampling rule; compile static per shape);
* **independent**: a fresh Python process per problem that builds the reference as a user
  would (the problem's precision settings, its init inputs, the model on the device in the
  problem's mode, under ``torch.no_grad``), times it with ``triton.testing.do_bench``
  (median), then ``torch._dynamo.reset()`` and a fresh ``torch.compile(model,
  dynamic=False)`` of that shape alone, warmed up and timed the same way. The same process
  also times both with kbench's protocol (:func:`sandbox.timing.time_cuda`, one input set):
  where kbench and do_bench disagree, that column says whether the protocol or the
  verifier's child is the cause; ``+warm queued`` the same with one untimed call queued
  right before each sample's flush (calls back to back as in a model, the untimed one
  covering the launch in place of the spin). A third eager figure (``refilled``) times the protocol
  with the inputs refilled in place from a new seed before every sample, as the verifier
  does when a pool of timed sets does not fit: on compute-bound products the first GPU run
  read the verifier 10-13 % faster than the protocol with one input set (docs/benchmarks.md
  §7b), and this column tests whether the refills between samples (the card's duty cycle)
  are why (the H100 run of 2026-12-07 says they are: matmul 1.479 ms refilled, 1.643 with
  one set); ``refilled+warm`` adds one untimed call after each refill, before the flush and
  the timed call (not open to a verifier: the candidate would see the fresh set in a call
  that is not timed, where a value-keyed cache could fill), ``warm>refill`` one untimed call
  on the set already timed, finished before the refill (an order a verifier can use), and
  ``+ no spin`` the same without the launch-covering spin (itself a low-power gap before
  the sample), ``+ queued`` the untimed call with the refill queued after the synchronize,
  right before the flush, so that it covers the launch (``time_cuda``'s ``queue``),
  ``queued`` the shipped order (protocol 9: the refill queued after the synchronize, no
  untimed call), ``no copy`` that order with the fresh set used where it was made instead
  of copied into the buffers (a shorter gap before the sample); ``no spin`` times the protocol with one input set and no spin. These
  diagnostic columns are measured for ``--probe``'s problems only (default: the three fp16
  products where the ratio was outside 3 %), with the mean SM clock (NVML, every 2 ms) under
  ``do_bench``, kbench's order and kbench's order without the spin (``SM MHz``): whether the
  fp16 products' gap is a clock difference, as §14 supposes.

``--warm-too`` adds kbench's side with ``TimingConfig.warm_call`` (an untimed call before
each sample; off by default) for ``--probe``'s problems (``warm``). The table gives both and their ratio, and the host launch cost per call that kbench's
protocol covered (``launch``); a ratio outside 1 ± ``--tolerance`` (3 %) is flagged.
The default problems include those where a shared compiled model once went wrong
(cross-entropy over 128k classes, GroupNorm, KL divergence, RMSNorm+RoPE). Exit 0 only if
every row agrees. ``--one KEY`` is the independent half for one problem (used internally).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from typing import Any

PROBLEMS = ("level1/cross_entropy_128k,level1/groupnorm,level1/kl_div,level2/rmsnorm_rope,"
            "level1/softmax,level1/layernorm,level1/matmul,level1/relu,level2/gemm_bias_relu,"
            "level1/log_softmax_128k,level1/sum_dim,level2/swiglu,level1/rmsnorm,"
            "level1/l2_normalize,level2/add_rmsnorm,level1/conv2d")


class SmClock:
    """The mean SM clock (MHz, from NVML every 2 ms, nvidia-ml-py) while the block runs:
    whether a method's milliseconds came at another clock than another's (the fp16
    products' gap against do_bench, §14). ``mhz`` stays None where NVML is unavailable."""

    def __init__(self) -> None:
        self.mhz: float | None = None
        self._samples: list[int] = []
        self._stop = threading.Event()

    def __enter__(self) -> SmClock:
        try:
            import pynvml
            import torch

            pynvml.nvmlInit()
            self._h = pynvml.nvmlDeviceGetHandleByIndex(
                torch.cuda._get_nvml_device_index(torch.cuda.current_device()))
            self._read = lambda: pynvml.nvmlDeviceGetClockInfo(self._h, pynvml.NVML_CLOCK_SM)
            self._read()
        except Exception:  # noqa: BLE001 - no NVML: no clock column
            return self
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self._samples.append(self._read())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if hasattr(self, "_thread"):
            self._thread.join()
        if self._samples:
            self.mhz = statistics.fmean(self._samples)


def _shape_of(spec: Any, device: str, name: str | None) -> Any:
    shapes = spec.shapes_for(device)
    if name is None:
        return shapes["main"] if "main" in shapes else next(iter(shapes.values()))
    if name not in shapes:
        raise SystemExit(f"--shape {name}: {spec.key} has the shapes {', '.join(shapes)}")
    return shapes[name]


def pad_kernels(cache_dir: str) -> int:
    """How many generated Inductor source files under ``cache_dir`` pad a tensor
    (``constant_pad_nd``: Inductor's pad_mm pads an unaligned matmul's operands when its own
    benchmark finds the padded product faster, as on gemm_bias_relu's odd shape)."""
    from pathlib import Path

    n = 0
    for f in Path(cache_dir).rglob("*.py"):
        try:
            n += "constant_pad_nd" in f.read_text(errors="replace")
        except OSError:
            pass
    return n


def independent(key: str, device: str, probe: bool = True,
                shape_name: str | None = None) -> dict[str, Any]:
    """Eager and fresh per-shape compile medians (ms) of ``key``'s main shape (or
    ``shape_name``), by do_bench."""
    import torch
    import triton.testing

    from kbench.problems import load
    from sandbox import precision
    from sandbox.timing import TimingConfig, time_cuda

    spec = load(key)[0]
    precision.apply(spec.precision)  # the settings kbench applies to every side
    shape = _shape_of(spec, device, shape_name)
    init = spec.make_init_inputs(shape, seed=0)
    model = spec.make_model(init, 0, device, shape=shape)
    xs = spec.make_inputs(shape, 1, device)
    out: dict[str, Any] = {"problem": key}
    with torch.no_grad():
        out["eager_ms"] = triton.testing.do_bench(lambda: model(*xs), warmup=100, rep=500,
                                                  return_mode="median")
        torch._dynamo.reset()
        compiled = torch.compile(model, dynamic=False)
        for _ in range(3):  # compile and autotune outside the measurement
            compiled(*xs)
        torch.cuda.synchronize()
        out["compile_ms"] = triton.testing.do_bench(lambda: compiled(*xs), warmup=100,
                                                    rep=500, return_mode="median")
        for mode, fn in (("eager", model), ("compile", compiled)):
            raw = time_cuda(lambda fn=fn: fn(*xs))
            out[f"protocol_{mode}_ms"] = statistics.median(raw.event_ms)
            out[f"protocol_{mode}_launch_ms"] = raw.launch_ms
            # one untimed call queued right before the flush (no synchronize between it and
            # the sample): the card runs calls back to back as in a model, and that call
            # covers the launch instead of a spin (a low-power gap)
            raw = time_cuda(lambda fn=fn: fn(*xs), queue=lambda i, fn=fn: fn(*xs))
            out[f"protocol_{mode}_warm_queued_ms"] = statistics.median(raw.event_ms)
        if not probe:
            return out
        # the SM clock under do_bench, kbench's order and kbench's order without the spin
        with SmClock() as clk:
            triton.testing.do_bench(lambda: model(*xs), warmup=100, rep=500)
        out["clock_do_bench_mhz"] = clk.mhz
        with SmClock() as clk:
            time_cuda(lambda: model(*xs))
        out["clock_protocol_mhz"] = clk.mhz
        with SmClock() as clk:
            time_cuda(lambda: model(*xs), cfg=TimingConfig(cover_launch=False))
        out["clock_no_spin_mhz"] = clk.mhz

        def refill(i: int) -> None:  # new values in the same buffers, outside the timing
            for x, y in zip(xs, spec.make_inputs(shape, 1000 + i, device)):
                if isinstance(x, torch.Tensor):
                    x.copy_(y)

        raw = time_cuda(lambda: model(*xs), prepare=refill)
        out["protocol_eager_refilled_ms"] = statistics.median(raw.event_ms)
        # the shipped order (protocol 9): the refill queued after the synchronize, with the flush
        raw = time_cuda(lambda: model(*xs), queue=refill)
        out["protocol_eager_refill_queued_ms"] = statistics.median(raw.event_ms)

        def refill_warm(i: int) -> None:  # the refill, then one untimed call, then the sample
            refill(i)
            model(*xs)

        # (the candidate would see the fresh set in an untimed call: a value-keyed cache
        # could fill there, so the verifier cannot do this; the column says what it would gain)
        raw = time_cuda(lambda: model(*xs), prepare=refill_warm)
        out["protocol_eager_refilled_warm_ms"] = statistics.median(raw.event_ms)

        def warm_then_refill(i: int) -> None:  # one untimed call on the set already timed,
            model(*xs)  # finished (device-wide) before the next set is written: the order
            torch.cuda.synchronize()  # a verifier can use without showing the next set
            refill(i)

        raw = time_cuda(lambda: model(*xs), prepare=warm_then_refill)
        out["protocol_eager_warm_refill_ms"] = statistics.median(raw.event_ms)
        # ... and without the spin, a low-power gap of its own before the sample
        raw = time_cuda(lambda: model(*xs), prepare=warm_then_refill,
                        cfg=TimingConfig(cover_launch=False))
        out["protocol_eager_warm_refill_no_spin_ms"] = statistics.median(raw.event_ms)

        def warm(i: int) -> None:  # the untimed call alone; the refill is queued after the
            model(*xs)  # synchronize, with the flush, and covers the launch as the flush does

        raw = time_cuda(lambda: model(*xs), prepare=warm, queue=refill)
        out["protocol_eager_warm_queued_refill_ms"] = statistics.median(raw.event_ms)

        def swap(i: int) -> None:  # the fresh set made and used where it was made: no copy
            xs[:] = spec.make_inputs(shape, 1000 + i, device)  # (a shorter gap than refill's)

        raw = time_cuda(lambda: model(*xs), queue=swap)  # as the shipped order, no copy
        out["protocol_eager_queued_swap_ms"] = statistics.median(raw.event_ms)
        # and without the launch-covering spin (a near-idle device before each sample)
        raw = time_cuda(lambda: model(*xs), cfg=TimingConfig(cover_launch=False))
        out["protocol_eager_no_spin_ms"] = statistics.median(raw.event_ms)
    return out


def kbench_side(key: str, device: str, warm_call: bool = False,
                shape_name: str | None = None) -> dict[str, Any]:
    from kbench.problems import load
    from sandbox import MemoryCache
    from sandbox.job import Limits
    from sandbox.timing import TimingConfig
    from sandbox.verifier import measure_baselines

    spec = load(key)[0]
    got = measure_baselines(spec, MemoryCache(), device=device,
                            limits=Limits(timing=TimingConfig(warm_call=warm_call)))
    names = [n for n, _ in got]
    main = shape_name or ("main" if "main" in names else (names[0] if names else None))
    t_e, t_c = got.get((main, "eager")), got.get((main, "compile"))
    return {"eager_ms": t_e.median_ms if t_e else None,
            "compile_ms": t_c.median_ms if t_c else None,
            "eager_spread": t_e.spread if t_e else None,
            "compile_spread": t_c.spread if t_c else None,
            "eager_launch_ms": t_e.launch_ms if t_e else None,
            "compile_launch_ms": t_c.launch_ms if t_c else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default=PROBLEMS)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tolerance", type=float, default=0.03)
    ap.add_argument("--json")
    ap.add_argument("--probe", default="level1/matmul,level2/gemm_bias_relu,level2/swiglu",
                    help="problems that also get the diagnostic columns (refills, warm calls, "
                         "no spin); 'all' for every problem")
    ap.add_argument("--warm-too", action="store_true",
                    help="for --probe's problems, also measure kbench's side with an untimed "
                         "call before each sample (TimingConfig.warm_call, off by default): "
                         "the 'warm' column")
    ap.add_argument("--shape", default=None,
                    help="the shape compared (default: main); e.g. odd, where Inductor may pad "
                         "an unaligned matmul (the pad columns: files of generated code that "
                         "pad, kbench's child / the independent process)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--no-probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(independent(args.one, args.device, probe=not args.no_probe,
                                     shape_name=args.shape)))
        return 0
    rows = []
    print(f"{'problem':28s} {'kbench eager':>12s} {'do_bench':>10s} {'ratio':>6s}   "
          f"{'kbench compile':>14s} {'do_bench':>10s} {'ratio':>6s}   {'warm e/c':>19s} "
          f"{'launch e/c':>11s} {'protocol e/c here':>19s} {'+warm queued e/c':>19s} {'refilled':>9s} {'refilled+warm':>13s} "
          f"{'warm>refill':>11s} {'+ no spin':>9s} {'+ queued':>9s} {'queued':>9s} {'no copy':>9s} {'no spin':>9s}"
          f" {'SM MHz do_bench/kbench/no spin':>30s} {'pad k/i':>7s}",
          flush=True)
    for key in args.problems.split(","):
        row: dict[str, Any] = {"problem": key}
        try:
            probe = args.probe == "all" or key in args.probe.split(",")
            # each side's Inductor code in a folder of its own: does it pad? (pad columns)
            k_dir, i_dir = tempfile.mkdtemp(prefix="kb-ind-"), tempfile.mkdtemp(prefix="in-ind-")
            os.environ["KBENCH_INDUCTOR_CACHE"] = k_dir  # the verifier's children's cache
            try:
                row.update({f"kbench_{k}": v for k, v in
                            kbench_side(key, args.device, shape_name=args.shape).items()})
            finally:
                os.environ.pop("KBENCH_INDUCTOR_CACHE", None)
            row["kbench_pad_files"] = pad_kernels(k_dir)
            if args.warm_too and probe:  # the verifier with TimingConfig.warm_call on
                row.update({f"kbench_warm_{k}": v for k, v in
                            kbench_side(key, args.device, warm_call=True,
                                        shape_name=args.shape).items()})
            p = subprocess.run([sys.executable, __file__, "--one", key, "--device", args.device,
                                *([] if probe else ["--no-probe"]),
                                *(["--shape", args.shape] if args.shape else [])],
                               capture_output=True, text=True, timeout=900,
                               env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": i_dir})
            row["independent_pad_files"] = pad_kernels(i_dir)
            if p.returncode != 0:
                raise RuntimeError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else
                                   f"exit {p.returncode}")
            ind = json.loads(p.stdout.strip().splitlines()[-1])
            row.update({"do_bench_eager_ms": ind["eager_ms"],
                        "do_bench_compile_ms": ind["compile_ms"],
                        **{k: v for k, v in ind.items()
                           if k.startswith(("protocol_", "clock_"))}})
        except Exception as e:  # noqa: BLE001 - a row, not a crash
            row["error"] = f"{type(e).__name__}: {e}"[:300]
        for mode in ("eager", "compile"):
            a, b = row.get(f"kbench_{mode}_ms"), row.get(f"do_bench_{mode}_ms")
            row[f"{mode}_ratio"] = a / b if a and b else None
        row["agrees"] = "error" not in row and all(
            r is not None and abs(r - 1) <= args.tolerance
            for r in (row["eager_ratio"], row["compile_ratio"]))
        rows.append(row)

        def f(x: Any, w: int) -> str:
            return f"{x:{w}.4g}" if isinstance(x, float) else f"{'-':>{w}s}"

        print(f"{key:28s} {f(row.get('kbench_eager_ms'), 12)} {f(row.get('do_bench_eager_ms'), 10)}"
              f" {f(row['eager_ratio'], 6)}   {f(row.get('kbench_compile_ms'), 14)} "
              f"{f(row.get('do_bench_compile_ms'), 10)} {f(row['compile_ratio'], 6)}   "
              f"{f(row.get('kbench_warm_eager_ms'), 9)}/{f(row.get('kbench_warm_compile_ms'), 9)} "
              f"{f(row.get('kbench_eager_launch_ms'), 5)}/{f(row.get('kbench_compile_launch_ms'), 5)} "
              f"{f(row.get('protocol_eager_ms'), 9)}/{f(row.get('protocol_compile_ms'), 9)} "
              f"{f(row.get('protocol_eager_warm_queued_ms'), 9)}/{f(row.get('protocol_compile_warm_queued_ms'), 9)} "
              f"{f(row.get('protocol_eager_refilled_ms'), 9)} "
              f"{f(row.get('protocol_eager_refilled_warm_ms'), 13)} "
              f"{f(row.get('protocol_eager_warm_refill_ms'), 11)} "
              f"{f(row.get('protocol_eager_warm_refill_no_spin_ms'), 9)} "
              f"{f(row.get('protocol_eager_warm_queued_refill_ms'), 9)} "
              f"{f(row.get('protocol_eager_refill_queued_ms'), 9)} "
              f"{f(row.get('protocol_eager_queued_swap_ms'), 9)} "
              f"{f(row.get('protocol_eager_no_spin_ms'), 9)} "
              f"{f(row.get('clock_do_bench_mhz'), 9)}/{f(row.get('clock_protocol_mhz'), 9)}/"
              f"{f(row.get('clock_no_spin_mhz'), 9)} "
              f"{row.get('kbench_pad_files', '-')!s:>3s}/{row.get('independent_pad_files', '-')!s:<3s}"
              f"{'' if row['agrees'] else '  <-- ' + row.get('error', 'outside tolerance')}",
              flush=True)
        if args.json:  # after each problem: a run stopped at a time limit keeps its rows
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)
    ok = sum(r["agrees"] for r in rows)
    print(f"{ok} / {len(rows)} within {args.tolerance:.0%} on eager and compile", flush=True)
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
