"""Time each exported op against its reference (eager) on the verified CUDA shapes.

Usage: ``python bench.py [--reps N] [--batch N] [--tol 0.15] [--no-compile] [--ops a,b]
[--shapes main,odd]`` on a machine with
a CUDA GPU. Each timed call is a zero-argument closure; inputs are made outside it. Two times
per op and per reference:

- device ms: the median CUDA-event time of one call, over ``--reps`` samples of ``--batch``
  calls queued back to back (no synchronization between them), each call after an L2 flush
  and between its own events, after a warm-up. Before each sample the device spins
  (``torch.cuda._sleep``) for longer than the host needs to launch the batch, so the host's
  launch cost is hidden as kbench's verifier hides it (its ``launch_ms``): the kind of time
  the stored speedups measured (cold L2, device time);
- host ms: ``time.perf_counter`` around ``--batch`` calls without synchronization, divided
  (the Python wrapper and launch cost per call, what a CPU-bound caller pays).

The speedups against eager and against ``torch.compile`` of the reference are device-time
ratios, each beside the one kbench stored at export and marked ``ok`` when within ``--tol``
of it (relative), else ``DIFFERS``. A triton op is timed as called, with its model's state.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time

import torch

PKG = "__PKG__"


def _host_ms(fn, reps: int, batch: int) -> float:
    """Median host time per call over ``reps`` samples of ``batch`` unsynchronized calls."""
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - t0) * 1e3 / batch)
    torch.cuda.synchronize()
    return statistics.median(times)


def _sleep_cycles_per_ms() -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1000)
    start.record()
    torch.cuda._sleep(10_000_000)
    end.record()
    end.synchronize()
    return 10_000_000 / max(start.elapsed_time(end), 1e-3)


def _device_ms(fn, reps: int, batch: int, host_ms: float, cycles_per_ms: float,
               flush=None) -> float:
    """Median CUDA-event time of one call, over ``reps`` samples of ``batch`` calls queued
    back to back, each call after an L2 flush (zeroing ``flush``, a buffer larger than L2)
    and between its own pair of events, as kbench's verifier and ``do_bench`` time a call;
    a device spin before each sample covers the host's launch of the batch."""
    if flush is None:
        l2 = getattr(torch.cuda.get_device_properties(torch.cuda.current_device()),
                     "L2_cache_size", 0)
        flush = torch.empty(max(256 << 20, 2 * l2), dtype=torch.int8, device="cuda")
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    # the launches of the batch and of its flushes, with a margin
    cover = int(min(1.25 * host_ms * batch + 0.05 + 0.01 * batch, 200.0) * cycles_per_ms)
    times = []
    for _ in range(reps):
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                 for _ in range(batch)]
        torch.cuda._sleep(cover)
        for start, end in pairs:
            flush.zero_()
            start.record()
            fn()
            end.record()
        pairs[-1][1].synchronize()
        times += [start.elapsed_time(end) for start, end in pairs]
    return statistics.median(times)


def _vs(now: float, stored: float | None, tol: float) -> str:
    """This machine's device-time speedup beside the stored one, marked ok within ``tol``
    (relative)."""
    if not stored:
        return f"{now:7.2f}x {'-':>7} {'':7}"
    mark = "ok" if abs(now - stored) <= tol * stored else "DIFFERS"
    return f"{now:7.2f}x {stored:6.2f}x {mark:7}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=50, help="samples per time (median)")
    ap.add_argument("--batch", type=int, default=20, help="calls per sample")
    ap.add_argument("--tol", type=float, default=0.15,
                    help="relative distance from the stored speedup still marked ok")
    ap.add_argument("--ops", default="",
                    help="comma-separated op names (e.g. level1_relu) to time; default: all")
    ap.add_argument("--shapes", default="",
                    help="comma-separated shape names (e.g. main,odd) to time; default: all")
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="skip timing torch.compile of the reference (x compile)")
    args = ap.parse_args()
    pkg = importlib.import_module(PKG)
    ops = {o.strip() for o in args.ops.split(",") if o.strip()}
    shapes = {o.strip() for o in args.shapes.split(",") if o.strip()}
    unknown = ops - {spec.name for spec in pkg.SPECS.values()}
    if unknown:
        print(f"--ops: no op named {', '.join(sorted(unknown))}; the ops are "
              f"{', '.join(spec.name for spec in pkg.SPECS.values())}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("bench.py needs a CUDA GPU (timings on CPU would mean nothing)", file=sys.stderr)
        return 2
    rt = importlib.import_module(f"{PKG}._runtime")
    cycles = _sleep_cycles_per_ms()
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
          f"(device ms: per call, {args.batch} queued per sample, L2 flushed before each, "
          "launch cost hidden; host ms: "
          "perf_counter per unsynchronized call)")
    print(f"{'op':32} {'shape':24} {'op ms':>9} {'ref ms':>9} {'x eager':>8} {'stored':>7}"
          f" {'x compile':>9} {'stored':>7}   {'op host':>8} {'ref host':>8}")

    def timed(fn):  # (device ms, host ms) per call
        host = _host_ms(fn, max(3, args.reps // 5), args.batch)
        return _device_ms(fn, args.reps, args.batch, host, cycles), host

    with torch.no_grad():
        for spec in pkg.SPECS.values():
            if ops and spec.name not in ops:
                continue
            if not spec.verified_device.startswith("cuda"):
                print(f"{spec.qualname:32} verified on {spec.verified_device} only: not timed")
                continue
            op = getattr(getattr(torch.ops, PKG), spec.name)
            for name, shape in spec.verified.items():
                if shapes and name not in shapes:
                    continue
                inputs = rt.inputs_at(spec, shape["params"], 0, "cuda")
                served = rt.model_params(spec, inputs)
                if served != shape["params"]:  # inputs alike, another verified model serves
                    print(f"{spec.qualname:32} {name:24} served by the model of "
                          f"{served}: not timed")
                    continue
                call = (*inputs, rt.state(spec, inputs)) if spec.takes_state else tuple(inputs)
                ref = rt.reference_model(spec, "cuda", served)
                t_op, h_op = timed(lambda: op(*call))  # noqa: B023
                t_ref, h_ref = timed(lambda: ref(*inputs))  # noqa: B023
                cols = [_vs(t_ref / t_op, shape.get("speedup_eager"), args.tol)]
                if args.compile:
                    torch._dynamo.reset()
                    cref = torch.compile(ref)
                    t_cref, _ = timed(lambda: cref(*inputs))  # noqa: B023
                    cols.append(_vs(t_cref / t_op, shape.get("speedup_compile"), args.tol))
                else:
                    cols.append(f"{'-':>8} {'-':>7} {'':7}")
                print(f"{spec.qualname:32} {name:24} {t_op:9.4f} {t_ref:9.4f} " + " ".join(cols)
                      + f"   {h_op:8.4f} {h_ref:8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
