"""The timing protocol's decisions without a GPU: the sampling loop driven by fake
measurements and a fake clock, small-kernel batching, spread and noisy marking, and old
timing records still loading."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from sandbox.timing import RawTimes, TimingConfig, calls_per_sample, hidden_work, sample, summarize
from sandbox.verdict import ShapeResult, Status, Timing, Verdict

# No warm-up worth speaking of, no RSE stop, no budget stop: only what a test sets decides.
BASE = TimingConfig(warmup_ms=0.0, min_reps=1, max_reps=10_000, min_measured_ms=0.0,
                    min_wall_ms=0.0, budget_s=1e9, limit_s=1e9, target_rse=0.0)


class Fake:
    """A device: each call takes ``call_ms(i)`` of event time; a sample adds ``host_extra``
    host ms per call and advances the clock by its host time."""

    def __init__(self, call_ms: Callable[[int], float] | float, host_extra: float = 0.0,
                 sync_ms: float = 0.0) -> None:
        self.call_ms = call_ms if callable(call_ms) else (lambda i, v=call_ms: v)
        self.host_extra, self.sync_ms = host_extra, sync_ms
        self.now = 0.0
        self.calls: list[tuple[int, int]] = []  # (i, k) of every sample, warm-up included

    def clock(self) -> float:
        return self.now

    def measure(self, i: int, k: int) -> tuple[float, float]:
        self.calls.append((i, k))
        ev = k * self.call_ms(i)
        host = ev + k * self.host_extra + self.sync_ms
        self.now += host / 1e3
        return ev, host

    def run(self, cfg: TimingConfig, audit: Callable[[int], bool] | None = None) -> RawTimes:
        return sample(self.measure, cfg, audit, self.clock)


def _cfg(**kw: object) -> TimingConfig:
    return TimingConfig(**{**asdict(BASE), **kw})


# ---------------------------------------------------------------------------------------
# The sampling rule
# ---------------------------------------------------------------------------------------
def test_min_samples_holds_even_when_the_error_target_is_met_at_once() -> None:
    # Identical samples have RSE 0: the error target alone would stop after the first.
    raw = Fake(1.0).run(_cfg(min_reps=30, target_rse=0.005))
    assert len(raw.event_ms) == 30


def test_min_measured_time_holds_after_min_samples() -> None:
    # 30 samples of 1 ms are 30 ms; 100 ms of event time needs 100 samples.
    raw = Fake(1.0).run(_cfg(min_reps=30, min_measured_ms=100.0, target_rse=0.005))
    assert len(raw.event_ms) == 100


def test_measured_time_counts_whole_samples_not_per_call_times() -> None:
    # 5 µs calls in batches of 20: each sample is 0.1 ms of event time, so ~10 ms needs 100
    # samples (counting per-call times would need 2000, past max_reps).
    raw = Fake(0.005).run(_cfg(min_measured_ms=9.95, max_reps=1000, target_rse=0.005))
    assert raw.calls_per_sample == 20 and len(raw.event_ms) == 100


def test_after_the_minimums_the_error_target_stops_the_loop() -> None:
    # Alternating 0.9/1.1 ms: RSE = 0.1 / sqrt(n) roughly; target 0.01 is met near n = 100.
    raw = Fake(lambda i: 0.9 if i % 2 else 1.1).run(_cfg(min_reps=10, target_rse=0.01))
    assert 90 <= len(raw.event_ms) <= 110


def test_the_budget_does_not_cut_the_minimums_short() -> None:
    # Each sample takes 100 ms of wall time; a 0.5 s budget alone would stop after ~5.
    raw = Fake(100.0).run(_cfg(min_reps=30, budget_s=0.5, target_rse=1e-9))
    assert len(raw.event_ms) == 30


def test_the_budget_stops_a_noisy_loop_once_the_minimums_are_met() -> None:
    raw = Fake(lambda i: 0.5 if i % 2 else 1.5).run(
        _cfg(min_reps=30, budget_s=0.2, target_rse=1e-9))
    # 1 ms per sample on the fake clock: the 0.2 s budget ends it near 200 samples
    assert 195 <= len(raw.event_ms) <= 205


def test_max_reps_and_limit_s_are_ceilings_over_the_minimums() -> None:
    assert len(Fake(1.0).run(_cfg(min_reps=30, max_reps=12)).event_ms) == 12
    # 100 ms samples under a 0.95 s hard ceiling: 10 samples, minimum of 30 or not
    assert len(Fake(100.0).run(_cfg(min_reps=30, limit_s=0.95)).event_ms) == 10


def test_every_side_gets_the_same_rule_under_load() -> None:
    """The measured case: eager converged after 16 samples while the candidate, under load,
    took 1000. Under one rule both sides reach the minimums before any stop."""
    cfg = TimingConfig(warmup_ms=0.0)
    quiet = Fake(0.5).run(cfg)  # eager on an idle moment: RSE 0 from the start
    loaded = Fake(lambda i: 0.5 * (1 + (i % 7) / 2)).run(cfg)  # candidate under load
    for raw in (quiet, loaded):
        assert len(raw.event_ms) >= cfg.min_reps
        # the fake clock advances by each sample's host time: 100 ms of sampling at least
        assert sum(raw.host_ms) * raw.calls_per_sample >= cfg.min_wall_ms - 1.0


def test_the_wall_minimum_holds_after_min_samples_and_bounds_tiny_calls() -> None:
    """Protocol 5: the minimum is 100 ms of sampling (wall), so a tiny call whose samples
    cost ~1.5 ms each in refill, synchronize and flush takes ~70 samples, not the 1,000
    (max_reps) that 100 ms of event time asked of a 27 µs call."""
    cfg = _cfg(min_reps=30, min_wall_ms=100.0, target_rse=0.005)
    tiny = Fake(0.027, sync_ms=1.5).run(cfg)
    assert 60 <= len(tiny.event_ms) <= 70
    slow = Fake(10.0).run(cfg)  # 10 ms samples: the 30-sample minimum is the longer one
    assert len(slow.event_ms) == 30


def test_the_verifier_hands_every_mode_the_same_timing_config(tmp_path: Path) -> None:
    from sandbox.job import Limits
    from sandbox.verifier import _job

    limits = Limits(timing=TimingConfig(min_reps=40, min_measured_ms=70.0, noisy_spread=0.2))
    spec = SimpleNamespace(path=Path("p.py"), precision=None,
                           meta=SimpleNamespace(allow_libraries=(), mode="inference"))
    seen = []
    for mode in ("candidate", "eager", "compile"):
        d = tmp_path / mode
        d.mkdir()
        _job(d, mode, "cuda", [], limits, spec)
        seen.append(TimingConfig(**json.loads((d / "job.json").read_text())["timing"]))
    assert seen == [limits.timing] * 3


# ---------------------------------------------------------------------------------------
# Small kernels: k calls per sample
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("call_ms", "k"), [
    (0.005, 20),     # 5 µs: 20 calls make a 100 µs sample
    (0.0199, 6),     # just under the threshold
    (0.020, 1),      # at the threshold: one call
    (0.5, 1),
    (0.00001, 100),  # capped at max_calls
])
def test_calls_per_sample(call_ms: float, k: int) -> None:
    assert calls_per_sample(call_ms, TimingConfig()) == k


def test_small_kernels_are_timed_in_batches_and_reported_per_call() -> None:
    fake = Fake(0.005)
    raw = fake.run(_cfg(min_reps=50, warmup_ms=1.0))
    assert raw.calls_per_sample == 20
    assert raw.event_ms == pytest.approx([0.005] * 50)  # elapsed / k, not elapsed
    measured = fake.calls[-50:]
    assert all(k == 20 for _, k in measured)
    assert fake.calls[0][1] == 1, "warm-up starts with single calls"


def test_a_slow_start_of_warm_up_does_not_keep_a_small_kernel_unbatched() -> None:
    """Seen on an H100: the first single calls of a 4 µs kernel took over 20 µs (allocations,
    a waking device), so k stayed 1 and every sample was one launch. While k is 1 it is
    decided again from the later single calls (after 10, 20, 40, ...)."""
    fake = Fake(lambda i: 0.030 if i < 6 else 0.004)
    raw = fake.run(_cfg(min_reps=30, warmup_ms=5.0))
    assert raw.calls_per_sample == 25
    assert raw.event_ms == pytest.approx([0.004] * len(raw.event_ms))
    assert [k for _, k in fake.calls[:10]] == [1] * 10  # decided after the 10th single call
    assert fake.calls[10][1] == 25
    slow = Fake(0.030)  # a call that is slow throughout stays unbatched
    assert slow.run(_cfg(min_reps=30, warmup_ms=5.0)).calls_per_sample == 1


@pytest.mark.parametrize("warmup_ms", [1.0, 0.01])  # k chosen inside warm-up, or after it
def test_the_caller_is_told_k_before_any_batch_and_may_lower_it(warmup_ms: float) -> None:
    """The child gives every call of a batch its own input buffers; it learns k before the
    first batch runs, and may afford fewer sets than asked (memory): the k it returns is
    the one used, for every batch."""
    fake = Fake(0.005)
    told: list[tuple[int, int]] = []  # (k asked, samples measured before)

    def on_batch(k: int) -> int:
        told.append((k, len(fake.calls)))
        return 7

    raw = sample(fake.measure, _cfg(min_reps=20, warmup_ms=warmup_ms), None, fake.clock,
                 on_batch=on_batch)
    assert [k for k, _ in told] == [20]
    before = told[0][1]
    assert all(k == 1 for _, k in fake.calls[:before]), "no batch ran before on_batch"
    assert {k for _, k in fake.calls[before:]} == {7}
    assert raw.calls_per_sample == 7
    assert raw.event_ms == pytest.approx([0.005] * len(raw.event_ms))


def test_the_first_warm_up_call_does_not_choose_k() -> None:
    # The first call compiles (80 ms), the second takes 5 µs and ends the warm-up: the
    # median of both would say 40 ms a call.
    raw = Fake(lambda i: 80.0 if i == 0 else 0.005).run(_cfg(min_reps=10, warmup_ms=80.004))
    assert raw.calls_per_sample == 20


def test_a_slow_kernel_is_timed_one_call_per_sample() -> None:
    raw = Fake(2.0).run(_cfg(min_reps=10, warmup_ms=50.0))
    assert raw.calls_per_sample == 1 and len(raw.event_ms) == 10


def test_an_audit_replaces_whole_samples() -> None:
    fake = Fake(0.005)
    audited = {30, 31, 50}
    raw = fake.run(_cfg(min_reps=40, warmup_ms=0.01), audit=lambda i: i in audited)
    timed = {i for i, _ in fake.calls}
    assert not audited & timed, "an audited sample is not also timed"
    assert len(raw.event_ms) == 40


# ---------------------------------------------------------------------------------------
# Hidden work, per call
# ---------------------------------------------------------------------------------------
def test_hidden_work_shares_the_per_sample_floor_among_the_calls() -> None:
    # 20 calls of 5 µs and 0.15 ms of synchronize per sample: honest
    honest = Fake(0.005, sync_ms=0.15).run(_cfg(min_reps=20, warmup_ms=1.0))
    assert honest.calls_per_sample == 20 and hidden_work(honest) is None
    # 0.1 ms of hidden host work per call: under a per-call floor of 0.2 ms it would pass
    cheat = Fake(0.005, host_extra=0.1, sync_ms=0.15).run(_cfg(min_reps=20, warmup_ms=1.0))
    assert cheat.calls_per_sample == 20
    assert "outlasts its timed stream" in (hidden_work(cheat) or "")


# ---------------------------------------------------------------------------------------
# Spread, noisy
# ---------------------------------------------------------------------------------------
def test_summarize_reports_spread_calls_and_noisy() -> None:
    xs = [1.0, 1.0, 1.0, 1.0, 2.0, 1.2, 0.8, 1.0]
    s = summarize(RawTimes(xs, xs, 7))
    assert s["calls_per_sample"] == 7 and s["count"] == 8
    assert s["spread"] == pytest.approx(s["iqr_ms"] / s["median_ms"])
    assert s["median_ms"] == 1.0 and s["min_ms"] == 0.8
    assert summarize(xs)["calls_per_sample"] == 1  # a plain list: one call per sample


def test_noisy_is_marked_above_the_threshold_only() -> None:
    xs = [0.9, 1.0, 1.0, 1.1, 0.95, 1.05]
    spread = summarize(xs)["spread"]
    assert 0 < spread < 1
    assert summarize(xs, noisy_spread=spread)["noisy"] is False
    assert summarize(xs, noisy_spread=spread * 0.999)["noisy"] is True
    assert summarize([1.0] * 10)["noisy"] is False


def test_a_verdict_with_a_noisy_side_says_so_and_keeps_its_speedups() -> None:
    from sandbox.job import Limits
    from sandbox.judge import _Outcome, _with_timing

    spec = SimpleNamespace(roofline=lambda params: (None, None), meta=SimpleNamespace(dtype=None))
    verdict = Verdict(problem="p", status=Status.CORRECT, reason="ok", device="cuda",
                      backend="triton", shapes=(ShapeResult("small", {"N": 8}, False, 1, True),))
    steady = [1.0] * 8
    res = _Outcome(raw={"small": RawTimes(steady, steady, 4)})
    quiet = Timing(2.0, 0.1, 2.0, 2.0, 40, 0.0)  # IQR 5% of median
    loud = Timing(2.0, 0.5, 2.0, 2.0, 40, 0.0)  # IQR 25% of median, stored before `noisy`
    limits = Limits(timing=TimingConfig(noisy_spread=0.10))

    out = _with_timing(verdict, spec, res, {("small", "eager"): quiet}, {}, limits)
    assert not out.noisy and "noisy" not in out.reason
    assert out.shapes[0].timing.calls_per_sample == 4
    assert out.explain["timing"]["shapes"]["small"]["candidate"]["calls_per_sample"] == 4

    out = _with_timing(verdict, spec, res, {("small", "eager"): loud}, {}, limits)
    assert out.status is Status.CORRECT and out.noisy
    assert out.shapes[0].eager.noisy and out.speedup_eager == 2.0
    assert "noisy" in out.reason and "'small' eager" in out.reason
    assert any("noisy" in n for n in out.notes)
    assert out.explain["timing"]["shapes"]["small"]["eager"]["noisy"] is True

    loud_candidate = _Outcome(raw={"small": RawTimes([1.0, 1.5, 0.7, 1.0], [1.0] * 4)})
    out = _with_timing(verdict, spec, loud_candidate, {("small", "eager"): quiet}, {}, limits)
    assert out.noisy and out.shapes[0].timing.noisy and "'small' candidate" in out.reason


# ---------------------------------------------------------------------------------------
# Stored records
# ---------------------------------------------------------------------------------------
def test_old_timing_records_still_load() -> None:
    old = {"median_ms": 1.0, "iqr_ms": 0.5, "mean_ms": 1.1, "min_ms": 0.9, "count": 16,
           "rse": 0.01}
    t = Timing.from_dict(old)
    assert t.calls_per_sample == 1 and t.noisy is False and t.spread == 0.5
    shape = {"name": "s", "params": {}, "derived": False, "trials": 1, "passed": True,
             "timing": old, "eager": old, "compiled": None}
    v = Verdict.from_dict({"problem": "p", "status": "correct", "reason": "ok", "device": "cuda",
                           "backend": "triton", "shapes": [shape], "passed": True})
    assert v.noisy is False and v.shapes[0].eager == t
    # a new record round-trips, the summary's extra keys (spread) ignored
    new = Timing.from_dict(summarize(RawTimes([1.0, 2.0], [1.0, 2.0], 3)))
    assert new.calls_per_sample == 3 and Timing.from_dict(asdict(new)) == new


def test_the_protocol_version_is_part_of_every_device_fingerprint() -> None:
    """Baselines and device facts are looked up by fingerprint: one measured under another
    timing protocol (an older sampling rule, compile baselines with dynamic shapes) must not
    be reused, so the protocol's version is in the fingerprint and changes its hash."""
    from sandbox.fingerprint import fingerprint, fingerprint_hash
    from sandbox.timing import PROTOCOL

    fp = fingerprint("cpu")
    assert fp["protocol"] == PROTOCOL >= 2
    assert fingerprint_hash(fp) != fingerprint_hash({**fp, "protocol": PROTOCOL - 1})


def test_the_fingerprint_names_tritons_version_without_importing_it() -> None:
    """Triton's version comes from its installed metadata (importing Triton cost eval's own
    process 0.4 s): the same string as ``triton.__version__``, read without the import."""
    import subprocess
    import sys

    triton = pytest.importorskip("triton")
    code = ("import sys, json; from sandbox.fingerprint import _triton_version; "
            "v = _triton_version(); print(json.dumps([v, 'triton' in sys.modules]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    version, imported = json.loads(r.stdout)
    assert version == triton.__version__
    assert not imported


def test_launch_lead_covers_the_slowest_probe_with_a_margin():
    from sandbox.timing import TimingConfig, launch_lead

    cfg = TimingConfig()
    assert launch_lead([0.20, 0.25, 0.22], wait_ms=10.0, cfg=cfg) == pytest.approx(1.25 * 0.25 + 0.01)
    # no probe yet: nothing covered
    assert launch_lead([], wait_ms=10.0, cfg=cfg) == 0.0


def test_the_cover_grows_when_a_launch_outlasted_it():
    """A sample whose calls took the host longer to launch than the device's flush and spin
    timed the device waiting: the next samples get that launch covered, with the probes'
    margin; a launch inside its cover, or a call that synchronizes (lead 0), changes nothing."""
    from sandbox.timing import TimingConfig, grown_lead

    cfg = TimingConfig(max_lead_ms=10.0)
    assert grown_lead(0.05, launched_ms=0.08, cover_ms=0.10, k=1, cfg=cfg) == 0.05
    assert grown_lead(0.05, launched_ms=0.16, cover_ms=0.10, k=1, cfg=cfg) == pytest.approx(
        1.25 * 0.16 + 0.01)
    assert grown_lead(0.05, launched_ms=1.6, cover_ms=0.10, k=10, cfg=cfg) == pytest.approx(
        1.25 * 0.16 + 0.01)  # per call
    assert grown_lead(0.50, launched_ms=0.16, cover_ms=0.10, k=1, cfg=cfg) == 0.50  # never less
    assert grown_lead(0.05, launched_ms=50.0, cover_ms=0.10, k=1, cfg=cfg) == 10.0  # capped
    assert grown_lead(0.0, launched_ms=5.0, cover_ms=0.10, k=1, cfg=cfg) == 0.0  # synchronizes


def test_launch_lead_is_zero_for_a_call_that_waits_for_the_device():
    """A launch as long as the spin that kept the device busy blocked on the device (the
    call synchronizes): covering it would only grow with the cover."""
    from sandbox.timing import TimingConfig, launch_lead

    cfg = TimingConfig()
    assert launch_lead([0.1, 10.02, 0.1], wait_ms=10.0, cfg=cfg) == 0.0
    assert launch_lead([8.5], wait_ms=10.0, cfg=cfg) == 0.0


def test_launch_lead_is_capped():
    from sandbox.timing import TimingConfig, launch_lead

    cfg = TimingConfig(max_lead_ms=1.0)
    assert launch_lead([0.9, 0.95, 0.9], wait_ms=10.0, cfg=cfg) == 1.0


def test_summarize_carries_the_covered_launch_cost():
    from sandbox.timing import RawTimes, summarize
    from sandbox.verdict import Timing

    t = Timing.from_dict(summarize(RawTimes([1.0, 1.1, 0.9], [1.0, 1.1, 0.9], 1, 0.3)))
    assert t.launch_ms == 0.3
    # records stored before the field existed load with no cover
    d = {k: v for k, v in summarize([1.0, 2.0]).items() if k != "launch_ms"}
    assert Timing.from_dict(d).launch_ms == 0.0


class _HostClockCuda:
    """A stand-in for torch.cuda on a machine without one: events read the host clock and
    the device runs nothing, so an event pair times what the host did between the records.
    Enough to run time_cuda's plumbing (probes, cover, flush bookkeeping) on CPU."""

    def __init__(self) -> None:
        import time as _time

        self.clock = _time.perf_counter
        self.sleeps: list[int] = []
        outer = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                self.t = 0.0

            def record(self) -> None:
                self.t = outer.clock()

            def synchronize(self) -> None:
                pass

            def elapsed_time(self, other: Event) -> float:
                return (other.t - self.t) * 1e3

        self.Event = Event

    def current_device(self) -> int:
        return 0

    def get_device_properties(self, dev: int) -> SimpleNamespace:
        return SimpleNamespace(L2_cache_size=1 << 20)

    def synchronize(self) -> None:
        pass

    def _sleep(self, cycles: int) -> None:
        self.sleeps.append(cycles)


@pytest.fixture
def host_clock_cuda(monkeypatch):
    import torch

    import sandbox.timing as timing

    fake = _HostClockCuda()
    for name in ("Event", "current_device", "get_device_properties", "synchronize", "_sleep"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, device=None, **k: real_empty(16, dtype=torch.int8))
    monkeypatch.setattr(timing, "_CYCLES_PER_MS", 1_000_000.0)  # no calibration on a fake
    return fake


def _busy(ms: float) -> Callable[[], None]:
    import time as _time

    def fn() -> None:
        end = _time.perf_counter() + ms / 1e3
        while _time.perf_counter() < end:
            pass
    return fn


def _virtual_ms(fake: _HostClockCuda, monkeypatch: pytest.MonkeyPatch,
                ms: float) -> Callable[[], None]:
    """A call that takes the host exactly ``ms``: the events and time_cuda's launch timer
    read a virtual clock that only the call advances (the sampling budget keeps real time)."""
    import time as _time
    from types import SimpleNamespace

    import sandbox.timing as timing

    now = [0.0]
    fake.clock = lambda: now[0]
    monkeypatch.setattr(timing, "time", SimpleNamespace(**{
        **{k: getattr(_time, k) for k in dir(_time) if not k.startswith("_")},
        "perf_counter": lambda: now[0]}))

    def fn() -> None:
        now[0] += ms / 1e3
    return fn


def test_time_cuda_covers_a_measured_host_launch_cost(host_clock_cuda, monkeypatch):
    """A call whose host side takes 1 ms: three probes measure it, the cover is 1.25x that
    plus 10 µs, and every later sample queues a spin of that length (less the flush)."""
    from sandbox.timing import time_cuda

    cfg = TimingConfig(warmup_ms=5.0, min_reps=5, max_reps=12, min_measured_ms=1.0, budget_s=0.05,
                       limit_s=2.0)
    raw = time_cuda(_virtual_ms(host_clock_cuda, monkeypatch, 1.0), cfg=cfg)
    # On the real host clock a busy 2-core machine once stretched a call to 4.9 ms and the
    # cover grew to it, as protocol 6 says it should (grown_lead); here the host's time is
    # exactly 1 ms a call.
    assert raw.launch_ms == pytest.approx(1.25 * 1.0 + 0.01)
    spins = host_clock_cuda.sleeps
    probe = int(cfg.max_lead_ms * 1e6)
    assert spins.count(probe) == 3
    covers = spins[max(i for i, c in enumerate(spins) if c == probe) + 1:]
    assert covers and all(0 < c < int(cfg.max_lead_ms * 1e6) for c in covers)
    assert len(raw.event_ms) >= cfg.min_reps and all(e > 0 for e in raw.event_ms)


def test_queued_work_the_host_spends_its_time_on_is_no_cover(host_clock_cuda, monkeypatch):
    """``queue`` (the child's fresh sets, made after the synchronize) covers the launch only
    by the device time it runs ahead of the host: here making them takes the host 2 ms and the
    device nothing (it waits for the host), so every sample still gets the full spin. Counted
    as cover, the 2 ms would have cancelled the spin, and the events would time the launch."""
    from sandbox.timing import time_cuda

    cfg = TimingConfig(warmup_ms=5.0, min_reps=5, max_reps=12, min_measured_ms=1.0, budget_s=0.05,
                       limit_s=2.0)
    fn = _virtual_ms(host_clock_cuda, monkeypatch, 1.0)
    now = host_clock_cuda.clock
    queued: list[int] = []

    def queue(i: int) -> None:
        queued.append(i)
        fn()  # 1 ms of host time ...
        fn()  # ... twice, the device idle

    raw = time_cuda(fn, cfg=cfg, queue=queue)
    assert now() > 0 and queued, "queue ran"
    assert raw.launch_ms == pytest.approx(1.25 * 1.0 + 0.01)
    spins = host_clock_cuda.sleeps
    probe = int(cfg.max_lead_ms * 1e6)
    covers = spins[max(i for i, c in enumerate(spins) if c == probe) + 1:]
    assert covers and all(c == int(raw.launch_ms * 1e6) for c in covers), covers


def test_time_cuda_gives_no_cover_to_a_call_that_waits_on_the_device(host_clock_cuda):
    """A launch as long as the probe's spin (here: the host busy 9 ms, as a call that
    synchronizes would be) is not covered."""
    from sandbox.timing import time_cuda

    cfg = TimingConfig(warmup_ms=1.0, min_reps=4, max_reps=6, min_measured_ms=1.0, budget_s=0.05,
                       limit_s=2.0)
    raw = time_cuda(_busy(9.0), cfg=cfg)
    assert raw.launch_ms == 0.0
    assert host_clock_cuda.sleeps.count(int(cfg.max_lead_ms * 1e6)) == 3  # only the probes


def test_time_cuda_without_cover_queues_no_spin(host_clock_cuda):
    from sandbox.timing import time_cuda

    cfg = TimingConfig(warmup_ms=1.0, min_reps=4, max_reps=6, min_measured_ms=1.0, budget_s=0.05,
                       limit_s=2.0, cover_launch=False)
    raw = time_cuda(_busy(0.5), cfg=cfg)
    assert raw.launch_ms == 0.0 and host_clock_cuda.sleeps == []


def test_warm_up_ends_after_its_wall_time_for_a_tiny_call() -> None:
    """A 27 µs call whose samples cost ~1.5 ms each would need ~1,850 warm-up samples for
    50 ms of event time; warm-up ends after 100 ms of wall time instead (protocol 5)."""
    fake = Fake(0.027, sync_ms=1.5)
    raw = fake.run(_cfg(warmup_ms=50.0, warmup_wall_ms=100.0, min_reps=10, max_reps=2000))
    warm = len(fake.calls) - len(raw.event_ms)
    assert 60 <= warm <= 70
