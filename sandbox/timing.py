"""The timing protocol, shared by candidates, baselines and the benchmark scripts.

Only a zero-argument callable is timed; set-up (copying the next input set into place,
flushing L2) stays outside the timed region. Each sample:

  1. ``prepare()`` (outside timing), synchronize the device
  2. ``queue()`` (the verifier's child: the sample's fresh input sets made in place) and an L2
     flush (zeroing a buffer larger than L2), as ``triton.testing.do_bench`` does, and, where
     launching the sample's calls takes the host longer than both take the device, a device
     spin (``torch.cuda._sleep``) covering the difference
  3. start event, ``fn()`` ``k`` times back to back, end event on the current stream
  4. synchronize the whole device and read a host clock

The event time divided by ``k`` is the measurement (per call). ``k`` is 1 unless one call
takes less than ``small_call_ms`` in warm-up: a single call that short is mostly timer
resolution and launch jitter, so such a kernel is timed in batches of ``k`` calls lasting at
least ``batch_ms`` (``k <= max_calls``). Only the first call of a batch sees a cold L2 (the
flush precedes the sample, not each call). A caller may give each call of a batch its own
input buffers (``on_batch`` tells it ``k``; the verifier's child does, so that a kernel
cannot answer calls 2..k from a result it kept for the same buffers), so a batched per-call
time is the steady-state time of back-to-back calls; where
the host launches calls slower than the GPU runs them, it includes that launch cost. Every
side (candidate, eager, compile) gets the same rule, and ``calls_per_sample`` is recorded.

The spin makes the events time the device's work, not the device waiting for the host:
``do_bench`` gets the same by queueing samples without synchronizing between them. The
host's launch cost per call is measured on three probe samples in warm-up whose spin
(``max_lead_ms``) keeps the device busy for the whole launch; a call that synchronizes
inside (its launch outlasts the spin) gets no cover. A later sample whose launch outlasted
its cover (a busier host) grows the cover from then on (:func:`grown_lead`). The covered
cost is recorded (``launch_ms``). Work that depends on the inputs cannot hide under the spin: the inputs
are on the device, and reading them waits for the timed stream.

The host time of step 3-4 exposes work hidden from the current stream (side streams,
threads): if it greatly exceeds the event time the caller rejects the measurement.

The sampling rule (:func:`sample`), the same for every side: at least ``min_reps`` samples
*and* at least ``min_wall_ms`` of sampling (wall time of the measured loop; and
``min_measured_ms`` of event time, off by default), then stop as soon as the relative
standard error of the mean is at most ``target_rse`` or ``budget_s`` has passed since
measuring began; never more than ``max_reps`` samples, never longer than ``limit_s``. The
minimums keep a quick-to-converge side (eager on an idle moment) from being judged on a
handful of samples while another side is measured through a burst of load. The wall-time
minimum replaced 100 ms of event time (protocol 5): that one asked a 0.027 ms call for 3,700
samples of about 1.5 ms each (input refill, synchronize, flush), so it ran to ``max_reps``
and took 1.5 s of a 2.4 s timing phase on an H100, for a median whose spread was 2 %.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# The timing protocol's version, part of every device fingerprint: a stored baseline or
# device fact measured under another protocol is not reused. 2: one sampling rule for every
# side, batched small kernels on their own buffers, compile baselines static per shape.
# 3: timed inputs from fresh seeds (never the checked sets), one set per call (issue 17).
# 4: the host's launch cost covered by a device spin, as do_bench's queueing does (a
# compiled model's wrapper outlasted the flush: compile baselines were 12-290 % slower than
# do_bench's on an H100). 5: the minimum of sampling is wall time (100 ms), not 100 ms of
# event time (a call of 27 µs took 1,000 samples and 1.5 s). 6: the cover grows when a
# sample's launch outlasted it (the device waited for the host, and the events timed that).
# Under 8 concurrent verifications on an H100, matmul's median rose 4.2 %: a slower launch
# on a busier host is the likely cause; under protocol 6 the same run moved 1.7 % (H100,
# 2026-12-07). 7: timed sets pre-made in a pool of up to 8 GiB (was 2 GiB) and refilled ones
# rotated through up to 8 buffers (was 4), so a large input is timed at more placements
# (softmax's five medians spread 1.56 % with two buffers; sandbox._child.REFILL_SLOTS).
# 8: no input set is timed twice: past the parent's 100 seeds, every call gets a set of a
# seed derived from them (sandbox._inputs.timed_seed). Until 7 the sets came round again
# after 100 calls, and a fast kernel's timing makes thousands: a value-keyed cache of 100
# entries would have hit on nearly every timed call of a compute-heavy, small-output kernel.
# 9: the sample's sets are made after the synchronize, queued with the flush, so making them
# covers the launch (cover counts only the device's lead over the host). The candidate never
# runs between a set's making and its timed call. (Measured beside it on an H100, 2026-12-07:
# an untimed call on the set timed last before each sample, TimingConfig.warm_call, brought
# refilled fp16 products closer to do_bench, matmul 0.866 -> 0.926; it stays off, see there.)
PROTOCOL = 9

__all__ = ["PROTOCOL", "TimingConfig", "RawTimes", "Measure", "sample", "calls_per_sample", "time_cuda",
           "summarize", "hidden_work", "launch_lead", "grown_lead"]


@dataclass(frozen=True)
class TimingConfig:
    """How long and how often to time; the same config times every side of a verdict.

    ``min_reps``/``max_reps`` count samples (one sample is ``calls_per_sample`` calls); the
    names are kept so that stored jobs and existing callers still load.
    """

    warmup_ms: float = 50.0  # event time of warm-up calls, at most ...
    warmup_wall_ms: float = 100.0  # ... or this much wall time, whichever ends first
    min_reps: int = 30  # samples, at least
    max_reps: int = 1000  # samples, at most
    min_measured_ms: float = 0.0  # event time summed over samples, at least (protocol 4: 100)
    min_wall_ms: float = 100.0  # wall time of the measured loop, at least
    budget_s: float = 1.5  # past the minimums: stop at target_rse or after this long
    limit_s: float = 30.0  # hard ceiling on the measured loop, minimums or not
    target_rse: float = 0.005
    small_call_ms: float = 0.020  # a call faster than this is timed in batches
    batch_ms: float = 0.100  # a batched sample lasts at least this long
    max_calls: int = 100  # calls per sample, at most
    noisy_spread: float = 0.10  # IQR / median above this marks a timing noisy
    flush_bytes: int = 256 << 20  # at least this, and at least 2x L2
    cover_launch: bool = True  # spin the device to cover the host's launch of timed calls
    # One untimed call on the set timed last before each single-call sample (the verifier's
    # child, sandbox._child._TimedSets): the card then meets the timed call nearer the power
    # state of calls back to back. Off: a candidate that remembers its last call's output
    # (a value-keyed cache of one slot, correct output) would skip that call's work, and its
    # timed call would get the boost that the baselines' honest warm call takes away, ~6 % on
    # an fp16 8192^3 matmul (H100, 2026-12-07). To turn it on safely the warm call needs a
    # fresh set of its own and its output audited like a timed one's.
    warm_call: bool = False
    max_lead_ms: float = 10.0  # host launch cost covered per call (and spin per sample), at most


@dataclass(frozen=True)
class RawTimes:
    """Per-call times of each sample (a sample's time divided by ``calls_per_sample``)."""

    event_ms: list[float]
    host_ms: list[float]
    calls_per_sample: int = 1
    launch_ms: float = 0.0  # host launch cost per call covered by a device spin (0: none)


# measure(i, k): run sample i of k back-to-back calls; (event ms, host ms) of the whole sample
Measure = Callable[[int, int], tuple[float, float]]


def _rse(xs: Sequence[float]) -> float:
    """Relative standard error of the mean, in floats: asked after every sample, where
    ``statistics.stdev``'s exact arithmetic cost 0.7 ms a call (0.5 s of one timing)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mean = math.fsum(xs) / n
    if mean <= 0:
        return 0.0
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    return math.sqrt(var / n) / mean


def calls_per_sample(call_ms: float, cfg: TimingConfig) -> int:
    """Calls per sample for a call of ``call_ms``: 1 unless it is below ``small_call_ms``,
    else enough for a sample of ``batch_ms`` (at most ``max_calls``)."""
    if call_ms >= cfg.small_call_ms:
        return 1
    return max(1, min(cfg.max_calls, math.ceil(cfg.batch_ms / max(call_ms, 1e-6))))


def sample(measure: Measure, cfg: TimingConfig, audit: Callable[[int], bool] | None = None,
           clock: Callable[[], float] = time.perf_counter,
           on_batch: Callable[[int], int] | None = None) -> RawTimes:
    """The sampling rule (module docstring) over ``measure``; no device needed.

    Warm-up runs single calls until ``warmup_ms`` of event time or ``warmup_wall_ms`` of
    wall time has passed (at least one call, at most ``max_reps``: a 27 µs call needed 1,850
    calls for 50 ms of event time, each sample costing ~1.5 ms of refill, synchronize and
    flush); from the median of the single calls after the first (which
    pays for compilation and autotuning) it chooses ``k`` and, if ``k > 1``, finishes
    warm-up in batches. ``audit(i)``, asked before each measured sample, may take that
    sample for a check instead of timing it (True). ``on_batch(k)``, told the ``k`` chosen
    (when above 1) before any batch runs, returns the ``k`` to use (at most the one told:
    a caller that gives each call of a batch its own input set may afford fewer).
    """
    i, spent, k = 0, 0.0, 1
    told = False
    singles: list[float] = []
    t0 = clock()
    while True:
        ev, _ = measure(i, k)
        i += 1
        spent += ev
        if k == 1 and not told:
            singles.append(ev)
            n = len(singles)
            # Decided after 5 single calls, and looked at again after 10, 20, 40, ... from the
            # later half of them while still 1: the first calls of a warm-up may pay for
            # allocations or a waking device that later calls do not.
            if n >= 5 and n % 5 == 0 and (n // 5) & (n // 5 - 1) == 0:
                k = calls_per_sample(statistics.median(singles[1:] if n == 5 else singles[n // 2:]),
                                     cfg)
                if k > 1 and on_batch is not None:
                    k = max(1, min(k, int(on_batch(k))))
                    told = True
        if (spent >= cfg.warmup_ms or i >= cfg.max_reps or clock() - t0 >= cfg.limit_s
                or (clock() - t0) * 1e3 >= cfg.warmup_wall_ms):
            break
    if len(singles) < 5:  # warm-up ended early: a slow call, or a short warm-up
        k = calls_per_sample(statistics.median(singles[1:] or singles), cfg)
    if k > 1 and on_batch is not None and not told:
        k = max(1, min(k, int(on_batch(k))))

    events: list[float] = []
    hosts: list[float] = []
    measured = 0.0
    t_start = clock()
    while len(events) < cfg.max_reps and clock() - t_start < cfg.limit_s:
        if audit is not None and audit(i):
            i += 1
            continue
        ev, host = measure(i, k)
        i += 1
        events.append(ev / k)
        hosts.append(host / k)
        measured += ev
        if (len(events) < cfg.min_reps or measured < cfg.min_measured_ms
                or (clock() - t_start) * 1e3 < cfg.min_wall_ms):
            continue
        if _rse(events) <= cfg.target_rse or clock() - t_start >= cfg.budget_s:
            break
    return RawTimes(events, hosts, k)


def summarize(times: RawTimes | Sequence[float],
              noisy_spread: float = TimingConfig.noisy_spread) -> dict[str, float | int | bool]:
    """Median, IQR, mean, min, count, relative standard error, spread (IQR / median, robust
    to outliers), calls per sample, whether the spread exceeds ``noisy_spread`` and the
    host launch cost covered per call."""
    calls = times.calls_per_sample if isinstance(times, RawTimes) else 1
    xs = sorted(times.event_ms if isinstance(times, RawTimes) else times)
    med = statistics.median(xs)
    q1, _, q3 = statistics.quantiles(xs, n=4) if len(xs) >= 2 else (med, med, med)
    spread = (q3 - q1) / med if med > 0 else 0.0
    return {"median_ms": med, "iqr_ms": q3 - q1, "mean_ms": statistics.fmean(xs),
            "min_ms": xs[0], "count": len(xs), "rse": _rse(xs), "spread": spread,
            "calls_per_sample": calls, "noisy": spread > noisy_spread,
            "launch_ms": times.launch_ms if isinstance(times, RawTimes) else 0.0}


def hidden_work(raw: RawTimes, slack: float = 1.3, floor_ms: float = 0.2) -> str | None:
    """A reason if host time says work ran outside the timed stream, else None.

    Compares per-call medians. ``floor_ms`` absorbs the fixed cost of one sample (a
    synchronize, the clock reads), so it is shared by the ``calls_per_sample`` calls of a
    sample: per call it is ``floor_ms / calls_per_sample``.
    """
    ev = statistics.median(raw.event_ms)
    host = statistics.median(raw.host_ms)
    if host > slack * ev + floor_ms / max(1, raw.calls_per_sample):
        return (f"the call's work outlasts its timed stream (host {host:.3f} ms vs "
                f"event {ev:.3f} ms per call): work on side streams or threads is not allowed")
    return None


def _sleep_cycles_per_ms() -> float:
    """GPU clock cycles of ``torch.cuda._sleep`` per millisecond, measured once per process."""
    global _CYCLES_PER_MS
    if _CYCLES_PER_MS is None:
        import torch

        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        # load the kernel and raise the clocks (an idle GPU runs slow), then the fastest of
        # three: the most cycles per ms, so a spin at a lower clock only lasts longer
        torch.cuda._sleep(10_000_000)
        best = math.inf
        for _ in range(3):
            a.record()
            torch.cuda._sleep(2_000_000)
            b.record()
            b.synchronize()
            best = min(best, a.elapsed_time(b))
        _CYCLES_PER_MS = 2_000_000 / max(best, 1e-3)
    return _CYCLES_PER_MS


_CYCLES_PER_MS: float | None = None


def launch_lead(launch_ms: Sequence[float], wait_ms: float, cfg: TimingConfig) -> float:
    """The per-call host time to cover before a sample's timed calls, from probe launches.

    ``launch_ms`` are host times of single launches made while the device was kept busy for
    ``wait_ms`` (so a launch that finished earlier never waited for the device). A launch
    that took as long as the wait blocked on the device (the call synchronizes): covering
    it would only grow with the cover, so nothing is covered and the call is timed with
    its host cost showing, as before. Else the slowest probe, with a margin, capped at
    ``cfg.max_lead_ms``."""
    if not launch_ms or max(launch_ms) >= 0.8 * wait_ms:
        return 0.0
    return min(cfg.max_lead_ms, 1.25 * max(launch_ms) + 0.01)


def grown_lead(lead: float, launched_ms: float, cover_ms: float, k: int,
               cfg: TimingConfig) -> float:
    """The per-call cover after a measured sample whose ``k`` calls took the host
    ``launched_ms`` to launch, behind ``cover_ms`` of flush and spin on the device.

    A launch that outlasted the cover left the device waiting for the host, and the events
    timed the wait: a busier host than in the probes (other verifications, the parent's own
    work) makes a kernel look slower. From the next sample on, the cover is that launch,
    with the probes' margin (at most ``cfg.max_lead_ms``). Only where the probes found a
    call that does not synchronize (``lead`` above 0): one that does blocks on the device
    whatever the cover, and growing it would only add spin.
    """
    if lead <= 0 or k < 1 or launched_ms <= cover_ms:
        return lead
    return min(cfg.max_lead_ms, max(lead, 1.25 * launched_ms / k + 0.01))


def time_cuda(
    fn: Callable[[], object],
    prepare: Callable[[int], None] | None = None,
    cfg: TimingConfig | None = None,
    on_output: Callable[[int, object], None] | None = None,
    audit: Callable[[int], bool] | None = None,
    on_batch: Callable[[int], int] | None = None,
    queue: Callable[[int], None] | None = None,
) -> RawTimes:
    """Time ``fn`` on the current CUDA device by the protocol in the module docstring.

    ``prepare(i)`` runs before sample ``i`` outside the timed region, followed by a device-wide
    synchronize; ``queue(i)``, if given, after that synchronize: device work queued right
    before the flush, with no synchronize between it and the timed calls (it covers their
    launch as the flush does: its device time counts as cover, less the host time spent
    queueing it, through which a device waiting for the host idled); ``on_output(i, out)``
    receives the output of each sample's last call (callers keep the last few to re-check
    correctness). ``audit(i)``, asked before each measured sample, may make that sample an
    audited call instead (checked by the caller, not timed) and return True: the calls that
    are timed are then indistinguishable from ones that are checked. ``on_batch`` is passed
    to :func:`sample`.
    """
    import torch

    cfg = cfg or TimingConfig()
    dev = torch.cuda.current_device()
    l2 = getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0)
    flush = torch.empty(max(cfg.flush_bytes, 2 * l2), dtype=torch.int8, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    f0, f1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    cycles_per_ms = _sleep_cycles_per_ms() if cfg.cover_launch else 0.0
    state = {"lead": 0.0, "flush_ms": 0.0}  # per-call launch cost covered; last flush time
    probes: list[float] = []

    def measure(i: int, k: int) -> tuple[float, float]:
        if prepare is not None:
            prepare(i)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        # As in triton.testing.do_bench: the flush is queued right before the timed region,
        # so launching fn overlaps it; the events time the k calls alone. Where launching
        # the k calls takes the host longer than the flush takes the device, a spin covers
        # the difference, so the events time the device's work and not the device waiting
        # for the host (do_bench gets the same from queueing samples without synchronizing).
        f0.record()
        queued = 0.0  # host ms spent queueing: device time the device may have idled through
        if queue is not None:
            tq = time.perf_counter()
            queue(i)
            queued = (time.perf_counter() - tq) * 1e3
        flush.zero_()
        probe = cfg.cover_launch and len(probes) < 3 and i >= 1
        wait = cfg.max_lead_ms if probe else min(cfg.max_lead_ms,
                                                 max(0.0, k * state["lead"] - state["flush_ms"]))
        if wait > 0:
            torch.cuda._sleep(int(wait * cycles_per_ms))
        f1.record()
        start.record()
        t_launch = time.perf_counter()
        for _ in range(k):
            out = fn()
        launched = (time.perf_counter() - t_launch) * 1e3
        end.record()
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        if on_output is not None:
            on_output(i, out)
        cover = f0.elapsed_time(f1)
        if probe:  # the device was kept busy the whole launch: its host cost alone
            probes.append(launched / k)
            state["lead"] = launch_lead(probes, cfg.max_lead_ms, cfg) if len(probes) == 3 else 0.0
        else:
            if wait == 0:  # the device's lead over the host once all was queued
                state["flush_ms"] = max(0.0, cover - queued)
            state["lead"] = grown_lead(state["lead"], launched, cover, k, cfg)
        # host time of the sample, less the flush (and spin) it waited behind
        return start.elapsed_time(end), (t1 - t0) * 1e3 - cover

    raw = sample(measure, cfg, audit, on_batch=on_batch)
    return RawTimes(raw.event_ms, raw.host_ms, raw.calls_per_sample, state["lead"])
