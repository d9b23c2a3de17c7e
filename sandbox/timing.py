"""The timing protocol, shared by candidates, baselines and the benchmark scripts.

Only a zero-argument callable is timed; set-up (copying the next input set into place,
flushing L2) stays outside the timed region. Each repetition:

  1. ``prepare()`` (outside timing: rotate the input set in place), synchronize the device
  2. queue an L2 flush (zeroing a buffer larger than L2), as ``triton.testing.do_bench`` does
  3. start event, ``fn()``, end event on the current stream
  4. synchronize the whole device and read a host clock

The event time is the measurement. The host time of step 3-4 exposes work hidden from the
current stream (side streams, threads): if it greatly exceeds the event time the caller
rejects the measurement. Repetitions continue until the relative standard error of the mean
is small or the time budget ends.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["TimingConfig", "RawTimes", "time_cuda", "summarize", "hidden_work"]


@dataclass(frozen=True)
class TimingConfig:
    warmup_ms: float = 50.0
    min_reps: int = 10
    max_reps: int = 1000
    budget_s: float = 1.5
    target_rse: float = 0.005
    flush_bytes: int = 256 << 20  # at least this, and at least 2x L2


@dataclass(frozen=True)
class RawTimes:
    event_ms: list[float]
    host_ms: list[float]


def _stats(xs: list[float]) -> tuple[float, float, float, float, float]:
    xs = sorted(xs)
    n = len(xs)
    med = statistics.median(xs)
    q1, q3 = (statistics.quantiles(xs, n=4)[0], statistics.quantiles(xs, n=4)[2]) if n >= 2 else (med, med)
    mean = statistics.fmean(xs)
    sd = statistics.stdev(xs) if n >= 2 else 0.0
    rse = sd / math.sqrt(n) / mean if mean > 0 else 0.0
    return med, q3 - q1, mean, xs[0], rse


def summarize(times_ms: list[float]) -> dict[str, float | int]:
    """Median, IQR, mean, min, count and relative standard error of ``times_ms``."""
    med, iqr, mean, lo, rse = _stats(times_ms)
    return {"median_ms": med, "iqr_ms": iqr, "mean_ms": mean, "min_ms": lo,
            "count": len(times_ms), "rse": rse}


def hidden_work(raw: RawTimes, slack: float = 1.3, floor_ms: float = 0.2) -> str | None:
    """A reason if host time says work ran outside the timed stream, else None."""
    ev = statistics.median(raw.event_ms)
    host = statistics.median(raw.host_ms)
    if host > slack * ev + floor_ms:
        return (f"the call's work outlasts its timed stream (host {host:.3f} ms vs "
                f"event {ev:.3f} ms): work on side streams or threads is not allowed")
    return None


def time_cuda(
    fn: Callable[[], object],
    prepare: Callable[[int], None] | None = None,
    cfg: TimingConfig | None = None,
    on_output: Callable[[int, object], None] | None = None,
    audit: Callable[[int], bool] | None = None,
) -> RawTimes:
    """Time ``fn`` on the current CUDA device by the protocol in the module docstring.

    ``prepare(i)`` runs before repetition ``i`` outside the timed region; ``on_output(i, out)``
    receives each repetition's output (callers keep the last few to re-check correctness).
    ``audit(i)``, asked before each measured repetition, may make that repetition an audited
    call instead (checked by the caller, not timed) and return True: the calls that are timed
    are then indistinguishable from ones that are checked.
    """
    import torch

    cfg = cfg or TimingConfig()
    dev = torch.cuda.current_device()
    l2 = getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0)
    flush = torch.empty(max(cfg.flush_bytes, 2 * l2), dtype=torch.int8, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    f0, f1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def one(i: int) -> tuple[float, float]:
        if prepare is not None:
            prepare(i)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        # As in triton.testing.do_bench: the flush is queued right before the timed region,
        # so launching fn overlaps it; the events time fn alone.
        f0.record()
        flush.zero_()
        f1.record()
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        if on_output is not None:
            on_output(i, out)
        # host time of the call, less the flush it waited behind
        return start.elapsed_time(end), (t1 - t0) * 1e3 - f0.elapsed_time(f1)

    # Warm-up: at least one call, then until warmup_ms of measured time has passed.
    i, spent = 0, 0.0
    while True:
        ev, _ = one(i)
        i += 1
        spent += ev
        if spent >= cfg.warmup_ms or i >= cfg.max_reps:
            break
    events: list[float] = []
    hosts: list[float] = []
    t_start = time.perf_counter()
    while len(events) < cfg.max_reps:
        if audit is not None and audit(i):
            i += 1
            continue
        ev, host = one(i)
        i += 1
        events.append(ev)
        hosts.append(host)
        if len(events) >= cfg.min_reps:
            if _stats(events)[4] <= cfg.target_rse:
                break
            if time.perf_counter() - t_start >= cfg.budget_s:
                break

    return RawTimes(events, hosts)
