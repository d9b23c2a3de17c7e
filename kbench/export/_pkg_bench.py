"""Time each exported op against its reference (eager) on the verified CUDA shapes.

Usage: ``python bench.py [--reps N] [--rounds N] [--batch N] [--tol 0.05] [--no-compile]
[--ops a,b] [--shapes main,odd] [--all-shapes]`` on a machine with a CUDA GPU. It times
the shapes with a stored speedup (``--shapes`` or ``--all-shapes`` for the others). Each
timed call is a zero-argument closure; inputs are made outside it. Two times per op and per
reference:

- device ms: the median CUDA-event time of one call, over ``--reps`` samples, each sample
  a batch of calls queued back to back (no synchronization between them), each call after
  an L2 flush and between its own events, after a warm-up. A batch has as many calls as the
  verifier's sample of the same time had (stored at export; 20 where nothing was stored, or
  ``--batch``), since a long queue of calls may run at other clocks than single calls
  after a gap. Before each sample the device spins
  (``torch.cuda._sleep``) for longer than the host needs to launch the batch, so the host's
  launch cost is hidden as kbench's verifier hides it (its ``launch_ms``): the kind of time
  the stored speedups measured (cold L2, device time);
- host ms: ``time.perf_counter`` around ``--batch`` (default 20) calls without
  synchronization, divided (the Python wrapper and launch cost per call, what a CPU-bound
  caller pays).

The op, the reference and its ``torch.compile`` are timed in ``--rounds`` interleaved
rounds. The speedups against eager and against ``torch.compile`` are device-time ratios:
the median over the rounds, each beside the one kbench stored at export and marked ``ok``
when the two are within the measured spread: this run's (the rounds' range over their
median) plus the stored one's (the op's and the baseline's IQR over median, as the verifier
measured them) plus ``--tol`` (default 0.05, for what neither run's own spread shows: two
processes, two input placements, a later hour; one candidate verified 5 times spread 3.3 %
in docs/benchmarks.md §2), else ``DIFFERS``. The allowance is printed beside the mark; a
row that differs is followed by each time against the verifier's median of it (stored at
export), which says whether the op or a baseline moved. A triton op is timed as called,
with its model's state.
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


def _vs(rounds: list[float], stored: float | None, stored_spread: float, tol: float) -> str:
    """This machine's device-time speedup (the median of ``rounds``) beside the stored one,
    marked ok within the measured spread: the rounds' range over their median, plus the
    stored speedup's own (``stored_spread``), plus ``tol``; the allowance is printed."""
    now = statistics.median(rounds)
    if not stored:
        return f"{now:7.2f}x {'-':>7} {'':12}"
    allow = (max(rounds) - min(rounds)) / now + stored_spread + tol
    mark = "ok" if abs(now - stored) <= allow * stored else "DIFFERS"
    return f"{now:7.2f}x {stored:6.2f}x {mark:>7} {100 * allow:3.0f}%"


def _timed_as(shape: dict, who: str) -> tuple[int | None, float]:
    """The verifier's calls per sample and relative spread for one of a shape's times
    (``op``, ``eager`` or ``compile``), where the export stored them."""
    t = (shape.get("timed") or {}).get(who) or {}
    return t.get("calls_per_sample"), float(t.get("rel_iqr") or 0.0)


def _moved(shape: dict, times: dict[str, list[float]]) -> str:
    """Each time of a shape against the verifier's median of it (stored at export), so that
    a speedup that differs says whether the op or a baseline moved. Absolute times of two
    processes: a pointer for the reader, not a verdict."""
    parts = []
    for who, now in times.items():
        then = ((shape.get("timed") or {}).get(who) or {}).get("median_ms")
        if then:
            med = statistics.median(now)
            parts.append(f"{who} {med:.4f} ms, verifier {then:.4f} ({100 * (med / then - 1):+.1f} %)")
    return "; ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=50, help="samples per time (median)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds of op, reference and compiled reference")
    ap.add_argument("--batch", type=int, default=None,
                    help="calls per sample (default: the verifier's for that time, else 20)")
    ap.add_argument("--tol", type=float, default=0.05,
                    help="relative distance beyond both runs' measured spreads still marked ok")
    ap.add_argument("--ops", default="",
                    help="comma-separated op names (e.g. level1_relu) to time; default: all")
    ap.add_argument("--shapes", default="",
                    help="comma-separated shape names (e.g. main,odd) to time; default: all")
    ap.add_argument("--all-shapes", action="store_true",
                    help="also time the verified shapes kbench did not time (no stored "
                    "speedup to compare with)")
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
    per = f"{args.batch} queued" if args.batch else "the verifier's calls (else 20)"
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
          f"(device ms: per call, {per} per sample, L2 flushed before each, launch cost "
          f"hidden, median of {args.rounds} interleaved rounds; host ms: perf_counter per "
          "unsynchronized call; ok: within both runs' spread + --tol, the % shown)")
    print(f"{'op':32} {'shape':24} {'op ms':>9} {'ref ms':>9} {'x eager':>8} {'stored':>7}"
          f" {'':12} {'x compile':>9} {'stored':>7} {'':12}  {'op host':>8} {'ref host':>8}")
    host_batch = args.batch or 20

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
                if not (args.all_shapes or shapes or shape.get("speedup_eager")
                        or shape.get("speedup_compile")):
                    continue  # nothing stored to reproduce (derived shapes are not timed)
                inputs = rt.inputs_at(spec, shape["params"], 0, "cuda")
                served = rt.model_params(spec, inputs)
                if served != shape["params"]:  # inputs alike, another verified model serves
                    print(f"{spec.qualname:32} {name:24} served by the model of "
                          f"{served}: not timed")
                    continue
                call = (*inputs, rt.state(spec, inputs)) if spec.takes_state else tuple(inputs)
                ref = rt.reference_model(spec, "cuda", served)
                fns = {"op": lambda: op(*call), "eager": lambda: ref(*inputs)}  # noqa: B023
                if args.compile:
                    torch._dynamo.reset()
                    cref = torch.compile(ref)
                    fns["compile"] = lambda: cref(*inputs)  # noqa: B023
                host = {w: _host_ms(f, max(3, args.reps // 5), host_batch)
                        for w, f in fns.items()}  # also the warm-up (and the compile)
                times: dict[str, list[float]] = {w: [] for w in fns}
                for _ in range(max(1, args.rounds)):
                    for w, f in fns.items():
                        batch = args.batch or _timed_as(shape, w)[0] or 20
                        times[w].append(_device_ms(f, args.reps, batch, host[w], cycles))
                spread_op = _timed_as(shape, "op")[1]
                cols = [_vs([r / o for r, o in zip(times["eager"], times["op"])],
                            shape.get("speedup_eager"), spread_op + _timed_as(shape, "eager")[1],
                            args.tol)]
                if args.compile:
                    cols.append(_vs([c / o for c, o in zip(times["compile"], times["op"])],
                                    shape.get("speedup_compile"),
                                    spread_op + _timed_as(shape, "compile")[1], args.tol))
                else:
                    cols.append(f"{'-':>8} {'-':>7} {'':12}")
                t_op, t_ref = statistics.median(times["op"]), statistics.median(times["eager"])
                print(f"{spec.qualname:32} {name:24} {t_op:9.4f} {t_ref:9.4f} " + " ".join(cols)
                      + f"  {host['op']:8.4f} {host['eager']:8.4f}")
                if any("DIFFERS" in c for c in cols):
                    moved = _moved(shape, times)
                    if moved:
                        print(f"{'':32} {'':24} which time moved: {moved}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
