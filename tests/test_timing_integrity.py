"""Timing integrity on CPU (issue 17): timed input sets come from fresh seeds the child learns
only when timing begins; a timed sample chosen in secret is audited against the reference;
the timing phase's hang limit scales with the reference's time. The CUDA paths themselves
run in tests/test_gpu.py."""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from kbench.problems import load
from sandbox import cases as cases_mod
from sandbox._child import REFILL_SLOTS, _TimedSets, plan_pool, pool_budget, refill_slots
from sandbox._inputs import timed_seed
from sandbox.cases import (
    AUDIT_RING,
    MIN_TIMED_SETS,
    _build_cases,
    _prepare_trial,
    draw_timed,
    pick_audited,
    timing_limit_s,
)
from sandbox.job import Limits
from sandbox.timing import TimingConfig
from sandbox.verdict import Status
from sandbox.verifier import _job, _run_child, _time_command, _timed_mismatch

LIMITS = Limits(trials=2, derived_trials=1, max_derived=1)


@pytest.fixture(scope="module")
def relu():
    return load("level1/relu")[0]


@pytest.fixture()
def planned(relu):
    cases, _ = _build_cases(relu, "cpu", LIMITS, True)
    return cases


# ---------------------------------------------------------------------------------------
# Timed seeds: fresh, disjoint, unknown to the child before "time"
# ---------------------------------------------------------------------------------------
def test_timed_seeds_are_drawn_only_when_timing_begins_and_disjoint(relu, planned, tmp_path):
    timed = [c for c in planned if c.timed]
    assert timed and all(not c.timed_seeds for c in timed), "no timed seed exists before time"
    _job(tmp_path, "candidate", "cpu", planned, LIMITS, relu)
    replies = [json.dumps(_prepare_trial(relu, c, i, "cpu"))
               for c in planned for i in range(len(c.kinds))]
    before = (tmp_path / "job.json").read_text() + "".join(replies)

    cmd = _time_command(planned, LIMITS)
    assert set(cmd["shapes"]) == {c.name for c in timed}
    for c in timed:
        seeds = cmd["shapes"][c.name]["seeds"]
        assert seeds == c.timed_seeds
        assert len(set(seeds)) == len(seeds) >= max(MIN_TIMED_SETS, LIMITS.timing.max_calls)
        assert not set(seeds) & set(c.seeds), "timed sets are never the checked sets"
        assert not any(str(s) in before for s in seeds), "the child saw a timed seed early"
    assert "audit" not in json.dumps(cmd) and "back" not in json.dumps(cmd)


def test_timed_seeds_differ_between_runs(planned):
    c = next(c for c in planned if c.timed)
    first = draw_timed(c, 16)
    second = draw_timed(c, 16)
    assert not set(first) & set(second)


def test_timed_seeds_avoid_correctness_seeds_even_if_drawn(planned, monkeypatch):
    c = next(c for c in planned if c.timed)
    draws = iter([c.seeds[0], c.seeds[-1]] + list(range(1, 100)))
    monkeypatch.setattr(cases_mod.secrets, "randbits", lambda _: next(draws))
    seeds = draw_timed(c, 16)
    assert len(seeds) == 16 and not set(seeds) & set(c.seeds)


# ---------------------------------------------------------------------------------------
# Pool or refill, and which set each timed call gets
# ---------------------------------------------------------------------------------------
MiB = 1 << 20


@pytest.mark.parametrize(("set_bytes", "n", "free", "pool"), [
    (1 * MiB, 100, 80 << 30, True),  # 100 MiB, well inside 8 GiB
    (80 * MiB, 100, 80 << 30, True),  # 8000 MiB <= 8 GiB
    (82 * MiB, 100, 80 << 30, False),  # past the 8 GiB cap however free the device
    (256 * MiB, 16, 80 << 30, True),  # 16 sets of 256 MiB: 4 GiB, a pool
    (256 * MiB, 16, 12 << 30, False),  # ... but not beside 12 GiB free (a quarter is 3 GiB)
    (256 * MiB, 100, 80 << 30, False),  # an fp16 8192^2 pair, 100 timed sets: refilled
    (1024 * MiB, 16, 80 << 30, False),  # softmax's main shape: refilled in place
    (10 * MiB, 16, 400 * MiB, False),  # 160 MiB > a quarter of 400 MiB free
    (6 * MiB, 16, 400 * MiB, True),  # 96 MiB <= 100 MiB
])
def test_pool_or_refill_by_memory(set_bytes, n, free, pool):
    assert plan_pool(set_bytes, n, free) is pool
    assert pool_budget(free) == min(free // 4, 8 << 30)


def _made(log: list[int]):
    def make(seed: int) -> list[Any]:
        log.append(seed)
        return [torch.full((4,), float(seed)), 3]
    return make


def _run_samples(ts: _TimedSets, n: int, k: int = 1) -> list[list[float]]:
    """What time_cuda does: prepare(i), k calls, keep(i, out); the value each call saw."""
    seen = []
    for i in range(n):
        ts.prepare(i)
        ts.fill(i)
        outs = [ts.args() for _ in range(k)]
        seen.append([float(a[0][0]) for a in outs])
        assert all(a[1] == 3 for a in outs)
        ts.keep(i, outs[-1][0].clone())
    return seen


def test_a_pool_holds_every_timed_set_at_its_own_address():
    seeds = list(range(100, 116))
    log: list[int] = []
    bufs = [torch.zeros(4), 3]
    ts = _TimedSets(_made(log), seeds, bufs, free_bytes=1 << 30, ring_size=AUDIT_RING)
    assert ts.pool and len(ts.slots) == 16
    assert ts.slots[0][0] is bufs[0], "the checked buffer is reused, refilled"
    seen = _run_samples(ts, 40)
    assert [s[0] for s in seen[:16]] == [float(x) for x in seeds]
    assert log[:16] == seeds, "the parent's seeds first, each made once"
    assert log == [timed_seed(seeds, c) for c in range(40)]
    assert len(set(log)) == 40, "past the pool's sets, every call gets a fresh one"
    assert len({s[0].data_ptr() for s in ts.slots}) == 16


def test_refill_mode_remakes_the_next_set_in_place_before_each_sample():
    seeds = list(range(200, 216))
    log: list[int] = []
    bufs = [torch.zeros(4), 3]
    ts = _TimedSets(_made(log), seeds, bufs, free_bytes=0, ring_size=AUDIT_RING)
    assert not ts.pool and len(ts.slots) == 1
    ptr = bufs[0].data_ptr()
    seen = _run_samples(ts, 20)
    assert [s[0] for s in seen[:16]] == [float(x) for x in seeds]
    assert log == [timed_seed(seeds, i) for i in range(20)], "made before each sample, not in it"
    assert len(set(log)) == 20
    assert ts.slots[0][0].data_ptr() == ptr


def test_refilled_sets_take_turns_in_several_buffers_where_memory_allows():
    """A set too large for a pool is still timed at several addresses: the buffers take
    turns, each refilled before its sample (16-byte sets, a quarter of 64 bytes free)."""
    seeds = list(range(500, 600))
    log: list[int] = []
    bufs = [torch.zeros(4), 3]
    ts = _TimedSets(_made(log), seeds, bufs, free_bytes=4 * 16 * 3, ring_size=AUDIT_RING)
    assert not ts.pool and len(ts.slots) == 3
    assert refill_slots(16, 4 * 16 * 3) == 3 and refill_slots(16, 1 << 30) == REFILL_SLOTS
    seen = _run_samples(ts, 12)
    assert [s[0] for s in seen] == [float(seeds[i]) for i in range(12)]
    assert log == seeds[:12], "each sample's set made before it, once"
    assert len({s[0].data_ptr() for s in ts.slots}) == 3


def test_every_call_of_a_batch_gets_its_own_buffer_and_seed():
    seeds = list(range(300, 400))
    ts = _TimedSets(_made([]), seeds, [torch.zeros(4), 3], free_bytes=1 << 30, ring_size=4)
    ts.prepare(0)
    ts.fill(0)
    ts.args()  # a warm-up single
    ts.keep(0, None)
    assert ts.on_batch(8) == 8
    seen = _run_samples(ts, 3, k=8)
    flat = [v for s in seen for v in s]
    assert flat == [float(s) for s in seeds[1:25]], "no set repeats within 24 calls"
    # the ring names the seed of each sample's last call
    assert [(i, s, c) for i, s, _, c in ts.ring] == [(0, 300, 0), (0, 308, 8), (1, 316, 16),
                                                      (2, 324, 24)]
    assert all(float(o[0]) == s for i, s, o, _ in list(ts.ring)[1:])


def test_refill_batches_are_limited_by_memory():
    seeds = list(range(1000, 1100))
    ts = _TimedSets(_made([]), seeds, [torch.zeros(4), 3], free_bytes=4 * 16 * 4, ring_size=4)
    assert not ts.pool
    assert ts.on_batch(50) == 4  # a quarter of free memory holds four 16-byte sets


def test_the_ring_keeps_the_last_samples_whatever_is_audited():
    ts = _TimedSets(_made([]), list(range(16)), [torch.zeros(4), 3], 1 << 30, AUDIT_RING)
    _run_samples(ts, 37)
    assert [i for i, _, _, _ in ts.ring] == [33, 34, 35, 36]
    assert [(s, c) for _, s, _, c in ts.ring] == [(timed_seed(range(16), c), c)
                                                  for c in (33, 34, 35, 36)]


def test_no_input_set_is_timed_twice_however_many_calls():
    """A fast kernel's timing makes thousands of calls; were the parent's 100 seeds reused, a
    value-keyed cache of 100 entries would hit on every call after the first hundred."""
    seeds = list(range(700, 716))
    log: list[int] = []
    ts = _TimedSets(_made(log), seeds, [torch.zeros(4), 3], free_bytes=1 << 30, ring_size=4)
    ts.prepare(0)
    ts.fill(0)
    ts.args()
    ts.keep(0, None)
    assert ts.on_batch(8) == 8
    _run_samples(ts, 50, k=8)
    assert len(log) == 1 + 50 * 8 and len(set(log)) == len(log), "a fresh set for every call"
    assert not set(log[16:]) & set(seeds)
    assert all(0 <= x < 1 << 62 for x in log)


@pytest.mark.parametrize("free", [1 << 30, 0])  # a pool, one refilled buffer
def test_the_warm_call_meets_the_set_timed_last_never_the_next(free):
    """Protocol 9: before each single-call sample, one untimed call on the set timed last;
    the next set is made only after it (fill, after the synchronize), so the candidate never
    runs between a set's making and its timed call."""
    seeds = list(range(900, 916))
    log: list[tuple[str, int]] = []
    made: list[int] = []  # a set's value is its index here (a 62-bit seed is no float32)

    def make(seed: int) -> list[Any]:
        log.append(("make", seed))
        made.append(seed)
        return [torch.full((4,), float(len(made) - 1)), 3]

    def warm(sets: list[Any]) -> None:
        log.append(("warm", made[int(sets[0][0])]))

    ts = _TimedSets(make, seeds, [torch.zeros(4), 3], free_bytes=free, ring_size=4, warm=warm)
    for i in range(40):
        ts.prepare(i)  # time_cuda: prepare, synchronize, queue (fill), flush, timed call
        ts.fill(i)
        log.append(("call", made[int(ts.args()[0][0])]))
    calls = [s for e, s in log if e == "call"]
    assert calls == [timed_seed(seeds, c) for c in range(40)]
    for j, (e, s) in enumerate(log):
        if e == "warm":
            assert log[j - 1] == ("call", s), "the set timed last, before the next is made"
            assert log[j + 1][0] == "make"
        if e == "make":
            assert log[j + 1] == ("call", s), "nothing runs between a set's making and its call"
    assert sum(e == "warm" for e, _ in log) == 39, "every sample but the first"


def test_no_warm_call_before_a_batch_or_when_switched_off():
    log: list[int] = []
    ts = _TimedSets(_made([]), list(range(100)), [torch.zeros(4), 3], free_bytes=1 << 30,
                    ring_size=4, warm=lambda sets: log.append(1))
    ts.prepare(0)
    ts.fill(0)
    ts.args()
    assert ts.on_batch(4) == 4
    _run_samples(ts, 5, k=4)
    assert log == [], "batched calls run back to back already"
    off = _TimedSets(_made([]), list(range(100)), [torch.zeros(4), 3], 1 << 30, 4)
    _run_samples(off, 5)
    assert off.warm is None


def test_derived_timed_seeds_depend_on_the_secret_draws():
    a, b = [secrets.randbits(62) for _ in range(16)], [secrets.randbits(62) for _ in range(16)]
    assert [timed_seed(a, c) for c in range(16)] == a
    assert timed_seed(a, 16) != timed_seed(b, 16)
    assert timed_seed(a, 16) != timed_seed(a, 32) != a[0]


# ---------------------------------------------------------------------------------------
# The secret audit
# ---------------------------------------------------------------------------------------
def test_audited_sample_is_random_across_runs(planned):
    c = next(c for c in planned if c.timed)
    kept = [50, 51, 52, 53]
    picks = Counter()
    for _ in range(400):
        draw_timed(c, 16)
        (p,) = pick_audited(c, kept)
        picks[p] += 1
    assert set(picks) == set(kept), picks
    assert min(picks.values()) > 50, picks  # ~100 each; P(<=50) is negligible


def test_audited_sample_comes_from_secrets(planned, monkeypatch):
    c = next(c for c in planned if c.timed)
    monkeypatch.setattr(cases_mod.secrets, "randbelow", lambda n: 2)
    draw_timed(c, 16)
    assert pick_audited(c, [7, 8, 9, 10]) == [8]
    assert pick_audited(c, [9]) == [9], "fewer samples kept: still one of them"
    assert pick_audited(c, []) == []


def test_mismatched_audited_output_is_rejected_with_the_reason(relu, planned):
    c = next(c for c in planned if c.timed)
    seeds = draw_timed(c, 16)
    ref = torch.linspace(-1, 1, 64)
    assert _timed_mismatch(c, 7, seeds[3], ref.clone(), ref, relu, "cpu", call=3) is None
    later = timed_seed(seeds, 16 * 5 + 3)  # a set past the parent's draws, derived from them
    assert _timed_mismatch(c, 7, later, ref.clone(), ref, relu, "cpu", call=16 * 5 + 3) is None
    for seed, call in ((seeds[3], 4), (later, 3), (seeds[3], None), (seeds[3], -1),
                       (c.seeds[0], 3)):
        wrong = _timed_mismatch(c, 7, seed, ref.clone(), ref, relu, "cpu", call=call)
        assert wrong is not None and "never sent" in wrong, (seed, call)
    bad = _timed_mismatch(c, 7, seeds[3], ref + 1.0, ref, relu, "cpu", call=3)
    assert bad is not None
    assert ("a timed call's output (sample 7, a fresh input set) is wrong though the checked "
            "calls were right") in bad
    never = _timed_mismatch(c, 7, secrets.randbits(62), ref.clone(), ref, relu, "cpu", call=3)
    assert never is not None and "never sent" in never


class _FakeChild:
    """A scripted child: asks for its checked inputs, then times; the audited sample's output
    is the reference's for its seed, or wrong."""

    def __init__(self, cases, spec, work: Path, wrong: bool) -> None:
        self.sent: list[str] = []
        self.script = self._script(cases, spec, work, wrong)

    def _script(self, cases, spec, work, wrong):
        yield {"event": "imported"}
        for c in cases:
            for i in range(len(c.kinds)):
                yield {"event": "need_inputs", "shape": c.name, "trial": i}
                yield {"event": "trial", "shape": c.name, "trial": i, "faults": []}
        yield {"event": "checked"}
        cmd = json.loads(self.sent[-1])
        self.time_cmd = cmd
        for name, d in cmd["shapes"].items():
            yield {"event": "timing", "shape": name, "event_ms": [1.0] * 5,
                   "host_ms": [1.0] * 5, "calls_per_sample": 1}
            yield {"event": "ring", "shape": name, "samples": [20, 21, 22, 23]}
            (i,) = json.loads(self.sent[-1])["audit"]
            seed = d["seeds"][i % len(d["seeds"])]
            c = next(c for c in cases if c.name == name)
            (x,) = spec.make_inputs(c.params, seed, "cpu")
            out = torch.relu(x) + (1.0 if wrong else 0.0)
            torch.save(out, work / f"t_{name}.pt")
            yield {"event": "timed_output", "shape": name, "sample": i, "seed": seed,
                   "call": i % len(d["seeds"]),
                   "file": f"t_{name}.pt"}
        yield {"event": "done"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def send(self, line: str) -> None:
        self.sent.append(line)

    def recv(self, deadline: float):
        return next(self.script, None)

    def finish(self, grace_s: float = 5.0):
        return SimpleNamespace(code=0, signal_name=None, timed_out=False, log_tail="",
                               flooded=False)

    def kill(self) -> None:
        pass

    def log_tail(self, limit: int = 3000) -> str:
        return ""


class _FakeHold:
    def share(self): pass
    def exclude(self): pass
    def release(self): pass
    def __enter__(self): return self
    def __exit__(self, *exc): return None


@pytest.mark.parametrize("wrong", [False, True])
def test_the_parent_audits_a_timed_output_through_the_protocol(relu, planned, tmp_path, wrong):
    child = _FakeChild(planned, relu, tmp_path, wrong)
    backend = SimpleNamespace(start=lambda work, device: child)
    res = _run_child(tmp_path, "cpu", planned, LIMITS, relu, do_time=True, check=True,
                     isolation=backend, hold=_FakeHold())
    timed = [c for c in planned if c.timed]
    assert set(child.time_cmd["shapes"]) == {c.name for c in timed}
    early = "".join(child.sent[:-1 - 2 * len(timed)])  # all the child got before "time"
    assert not any(str(s) in early for c in timed for s in c.timed_seeds)
    if wrong:
        assert set(res.shape_fail) == {c.name for c in timed}
        assert all("a timed call's output (sample " in r and "a fresh input set) is wrong "
                   "though the checked calls were right" in r for r in res.shape_fail.values())
    else:
        assert not res.shape_fail, res.shape_fail
    assert res.status is None and set(res.raw) == {c.name for c in timed}


# ---------------------------------------------------------------------------------------
# The scaled hang limit
# ---------------------------------------------------------------------------------------
def test_the_reference_time_is_measured_while_planning(planned):
    assert all(c.ref_ms is not None and c.ref_ms >= 0 for c in planned)


def _timed_case(ref_ms):
    return SimpleNamespace(timed=True, ref_ms=ref_ms)


def test_scaled_hang_limit_formula():
    lim = Limits()  # 60 s allowance, factor 20, max_reps 1000, cap 300 s
    t, scaled = timing_limit_s([_timed_case(1.0)], lim)
    assert scaled and t == pytest.approx(60 + 1e-3 * (2 * 1000 + 8) * 1 * 20)
    # a fast call is timed in batches: more calls, each short
    k = 20  # ceil(batch_ms 0.1 / 0.005)
    t, scaled = timing_limit_s([_timed_case(0.005)], lim)
    assert scaled and t == pytest.approx(60 + 0.005e-3 * 2008 * k * 20)
    # shapes add up; untimed shapes do not count
    two, _ = timing_limit_s([_timed_case(1.0), _timed_case(1.0),
                             SimpleNamespace(timed=False, ref_ms=100.0)], lim)
    assert two == pytest.approx(60 + 2 * 40.16)
    # capped at timing_s, and the fixed limit when the reference's time is unknown
    assert timing_limit_s([_timed_case(50.0)], lim) == (300.0, False)
    assert timing_limit_s([_timed_case(None)], lim) == (300.0, False)
    small = Limits(compile_allowance_s=5, hang_factor=2,
                   timing=TimingConfig(max_reps=100, small_call_ms=0.0))
    assert timing_limit_s([_timed_case(2.0)], small)[0] == pytest.approx(5 + 2e-3 * 208 * 2)


def test_timeout_during_timing_names_the_scaled_limit(relu, planned, tmp_path):
    class Hung(_FakeChild):
        def _script(self, cases, spec, work, wrong):
            yield {"event": "imported"}
            yield {"event": "checked"}

        def finish(self, grace_s: float = 5.0):
            return SimpleNamespace(code=None, signal_name="SIGKILL", timed_out=True,
                                   log_tail="", flooded=False)

    for c in planned:
        c.ref_ms = 1.0
    child = Hung(planned, relu, tmp_path, False)
    res = _run_child(tmp_path, "cpu", planned, LIMITS, relu, do_time=True, check=True,
                     isolation=SimpleNamespace(start=lambda w, d: child), hold=_FakeHold())
    limit, scaled = timing_limit_s(planned, LIMITS)
    assert scaled
    assert res.status is Status.TIMEOUT
    assert res.reason == (f"no progress for {limit:.3g} s during timing (limit scaled from the "
                          "reference's time)")


def test_check_trial_hang_limit_formula():
    from sandbox.cases import CALLS_PER_TRIAL, TRIAL_ALLOWANCE_S, check_step_s

    lim = Limits()  # 60 s compile allowance, factor 20, check_s 300
    case = SimpleNamespace(ref_ms=2.0)
    assert check_step_s(case, True, lim, "cuda:0") == pytest.approx(
        2 * 60 + 2e-3 * CALLS_PER_TRIAL * 20)
    assert check_step_s(case, False, lim, "cuda") == pytest.approx(
        TRIAL_ALLOWANCE_S + 2e-3 * CALLS_PER_TRIAL * 20)
    assert check_step_s(SimpleNamespace(ref_ms=10_000.0), False, lim, "cuda:0") == 300.0
    # off CUDA (the interpreter is far slower than the reference), or unknown: fixed limit
    assert check_step_s(case, True, lim, "cpu") is None
    assert check_step_s(SimpleNamespace(ref_ms=None), True, lim, "cuda:0") is None


def test_a_trial_that_hangs_is_stopped_at_its_own_limit(relu, planned, tmp_path, monkeypatch):
    """The check phase gives each trial its own limit from the child's request for its
    inputs: the shape's first trial (compiles) more, later ones less; a trial that never
    ends is a timeout naming that limit, not the phase's fixed 300 s."""
    import sandbox.verifier

    monkeypatch.setattr(sandbox.verifier, "check_step_s",
                        lambda c, first, limits, device: 7.0 if first else 3.0)
    waits: list[float] = []

    class HangsInTrial1(_FakeChild):
        def _script(self, cases, spec, work, wrong):
            c = cases[0]
            yield {"event": "imported"}
            yield {"event": "need_inputs", "shape": c.name, "trial": 0}
            yield {"event": "trial", "shape": c.name, "trial": 0, "faults": []}
            yield {"event": "need_inputs", "shape": c.name, "trial": 1}

        def recv(self, deadline):
            waits.append(deadline - time.monotonic())
            return next(self.script, None)

        def finish(self, grace_s: float = 5.0):
            return SimpleNamespace(code=None, signal_name="SIGKILL", timed_out=True,
                                   log_tail="", flooded=False)

    child = HangsInTrial1(planned, relu, tmp_path, False)
    res = _run_child(tmp_path, "cpu", planned, LIMITS, relu, do_time=True, check=True,
                     isolation=SimpleNamespace(start=lambda w, d: child), hold=_FakeHold())
    assert res.status is Status.TIMEOUT
    assert res.reason == ("no progress for 3 s during check (a trial's limit, scaled from the "
                          "reference's time; killed)")
    # import: its own limit; after imported: the phase's; trial 0: 7 s; trial 1: 3 s
    assert waits[0] == pytest.approx(LIMITS.import_s, abs=1)
    assert waits[1] == pytest.approx(LIMITS.check_s, abs=1)
    assert waits[2] == pytest.approx(7.0, abs=0.5) and waits[3] == pytest.approx(7.0, abs=0.5)
    assert waits[4] == pytest.approx(3.0, abs=0.5)
