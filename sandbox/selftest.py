"""A self-test of the timing harness (issue 17): does kbench report what it measured?

Each check is a :class:`Row` with what was expected, what was seen and pass/fail:

- **same kernel** as candidate and as baseline: 1.00x within the spread;
- **work done twice**: 0.5x within the spread;
- **known spin**: a kernel of known duration is reported at that duration (also a kernel so
  short that it is timed in batches: the per-call time, not the batch's);
- **untimed is null**: a speedup that was not measured is ``None`` (JSON ``null``), never 0;
- **slots not swapped**: the candidate's time sits in the candidate's slot and a slower
  candidate gets a speedup below 1 (a harness that swapped baseline and candidate would
  report 2x for the kernel that does the work twice).

Three places run them. ``fake``: the sampling rule (:func:`sandbox.timing.sample`) on a
deterministic fake device, judged by the verifier's own code (``sandbox.judge``), on any
machine. ``cpu``: the real verifier with Triton's interpreter on the self-test's own
kernels: they must be accepted, and with no timing on a CPU every speedup is null. ``gpu``:
the real verifier times the same kernels on the device, against a problem whose reference
*is* that kernel (a custom baseline), and a spin kernel that waits on the GPU's global timer.

``kbench doctor --self-test`` runs ``fake`` and ``cpu``; ``kbench doctor --gpu`` adds ``gpu``.

Example:
    >>> rows = fake_rows()
    >>> all(r.passed for r in rows), len(rows) >= 5
    (True, True)
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sandbox.job import Limits
from sandbox.timing import RawTimes, TimingConfig, sample, summarize
from sandbox.verdict import ShapeResult, Status, Timing, Verdict

__all__ = ["FakeDevice", "Judge", "Row", "cpu_rows", "fake_rows", "gpu_rows", "real_judge",
           "run"]


@dataclass(frozen=True)
class Row:
    """One check of the harness: its name, where it ran, what was expected and seen."""

    name: str
    where: str  # "fake device", "verifier (cpu)", "verifier (gpu)"
    expected: str
    got: str
    passed: bool


class FakeDevice:
    """A device whose calls take ``call_ms`` each, with deterministic Gaussian jitter of
    ``jitter`` (relative) from ``seed``; its clock advances by each sample's host time."""

    def __init__(self, call_ms: float, jitter: float = 0.02, seed: int = 0,
                 launch_ms: float = 0.002) -> None:
        self.call_ms, self.jitter, self.launch_ms = call_ms, jitter, launch_ms
        self.rng = random.Random(seed)
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def measure(self, i: int, k: int) -> tuple[float, float]:
        ev = sum(max(0.0, self.call_ms * (1.0 + self.rng.gauss(0.0, self.jitter)))
                 for _ in range(k))
        host = ev + self.launch_ms
        self.now += host / 1e3
        return ev, host

    def time(self, cfg: TimingConfig) -> RawTimes:
        return sample(self.measure, cfg, clock=self.clock)


# The judging seam: (candidate's raw samples, baseline's raw samples or None when the
# baseline was not measured) -> the verdict kbench would report.
Judge = Callable[[RawTimes, RawTimes | None], Verdict]

_SHAPE = "main"


def real_judge(cand: RawTimes, base: RawTimes | None, limits: Limits | None = None) -> Verdict:
    """What the verifier reports for these samples: the baseline summarised as
    ``sandbox.baselines`` stores it, the verdict timed by ``sandbox.judge._with_timing``."""
    from sandbox.judge import _Outcome, _with_timing

    limits = limits or Limits()
    shape = ShapeResult(name=_SHAPE, params={}, derived=False, trials=1, passed=True)
    v = Verdict(problem="selftest", status=Status.CORRECT, reason="correct", device="fake",
                backend="triton", shapes=(shape,))
    res = _Outcome(raw={_SHAPE: cand})
    eager = Timing.from_dict(summarize(base)) if base is not None else None
    spec = SimpleNamespace(roofline=lambda params: (None, None),
                           meta=SimpleNamespace(dtype="float32"))
    return _with_timing(v, spec, res, {(_SHAPE, "eager"): eager, (_SHAPE, "compile"): None},
                        {}, limits)  # type: ignore[arg-type]


def _tol(*ts: Timing | None, floor: float = 0.0) -> float:
    """The spread a ratio of these timings may show: the largest IQR over median, at least
    ``floor``."""
    return max([floor, *(t.spread for t in ts if t is not None)])


def _ratio_row(name: str, where: str, v: Verdict, want: float, floor: float = 0.0) -> Row:
    s = v.shapes[0] if v.shapes else None
    sp = v.speedup_eager
    tol = want * _tol(s.timing if s else None, s.eager if s else None, floor=floor)
    ok = v.status is Status.CORRECT and sp is not None and abs(sp - want) <= tol
    return Row(name, where, f"{want:.2f}x ± {tol:.3f} (the spread)",
               f"{sp:.3f}x" if sp is not None else f"{v.status.value}: no speedup ({v.reason})",
               ok)


def _null_in_json(v: Verdict) -> tuple[bool, str]:
    """Every unmeasured speed figure is None and serialises as JSON null, never 0."""
    d = json.loads(json.dumps(v.to_dict()))
    figures = {"speedup_eager": d["speedup_eager"], "speedup_compile": d["speedup_compile"],
               "sol_pct": d["sol_pct"]}
    for s in d["shapes"]:
        for k in ("speedup_eager", "speedup_compile", "sol_pct"):
            figures[f"{s['name']}.{k}"] = s[k]
    zero = [k for k, x in figures.items() if x is not None and x == 0]
    return not zero, ", ".join(f"{k}={x}" for k, x in figures.items())


def _count_null(seen: str) -> str:
    nulls = [p for p in seen.split(", ") if p.endswith("=None")]
    others = [p for p in seen.split(", ") if not p.endswith("=None")]
    return f"{len(nulls)} of {len(nulls) + len(others)} figures null" + (
        f"; not null: {', '.join(others)}" if others else "")


def fake_rows(judge: Judge = real_judge, cfg: TimingConfig | None = None) -> list[Row]:
    """The harness's rows on a deterministic fake device (any machine, milliseconds)."""
    cfg = cfg or TimingConfig()
    where = "fake device"
    rows = []
    one = FakeDevice(1.0, seed=1).time(cfg)
    same = judge(FakeDevice(1.0, seed=2).time(cfg), one)
    rows.append(_ratio_row("same kernel as candidate and baseline", where, same, 1.0))
    twice = judge(FakeDevice(2.0, seed=3).time(cfg), one)
    rows.append(_ratio_row("work done twice", where, twice, 0.5))
    for spin_ms in (0.25, 0.005):  # one call per sample; batches of calls (per-call time)
        v = judge(FakeDevice(spin_ms, jitter=0.01, seed=4).time(cfg), one)
        t = v.shapes[0].timing if v.shapes else None
        tol = spin_ms * _tol(t, floor=0.01)
        ok = t is not None and abs(t.median_ms - spin_ms) <= tol
        got = (f"{t.median_ms:.4f} ms per call ({t.calls_per_sample} per sample)"
               if t else f"{v.status.value}: untimed")
        rows.append(Row(f"known spin of {spin_ms * 1e3:g} µs", where,
                        f"{spin_ms:.4f} ms ± {tol:.4f}", got, ok))
    untimed = judge(FakeDevice(1.0, seed=5).time(cfg), None)  # the baseline failed
    ok, seen = _null_in_json(untimed)
    ok = ok and untimed.speedup_eager is None and untimed.shapes[0].speedup_eager is None
    rows.append(Row("untimed is null (no baseline)", where, "speedups null, never 0",
                    _count_null(seen), ok))
    s = twice.shapes[0] if twice.shapes else None
    timed = s is not None and s.timing is not None and s.eager is not None
    slots_ok = bool(timed and twice.speedup_eager is not None and twice.speedup_eager < 1.0
                    and abs(s.timing.median_ms - 2.0) <= 2.0 * _tol(s.timing, floor=0.01)
                    and abs(s.eager.median_ms - 1.0) <= _tol(s.eager, floor=0.01))
    got = (f"candidate {s.timing.median_ms:.3f} ms, baseline {s.eager.median_ms:.3f} ms, "
           f"{twice.speedup_eager:.3f}x" if timed and twice.speedup_eager is not None
           else f"{twice.status.value}: {twice.reason}")
    rows.append(Row("slots not swapped", where,
                    "candidate 2 ms in its slot, baseline 1 ms, speedup < 1", got, slots_ok))
    return rows


# ---------------------------------------------------------------------------------------
# The real verifier on the self-test's own kernels
# ---------------------------------------------------------------------------------------
_KERNELS = '''
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _copy(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask), mask=mask)
'''

# A problem whose reference is the self-test's copy kernel on a GPU (its eager baseline is
# then a custom baseline: the very kernel the candidates launch), a plain copy on a CPU.
PROBLEM = '''"""kbench self-test: a copy whose reference, on a GPU, is a Triton kernel."""
''' + _KERNELS + '''
n = 1 << 26  # 256 MiB in fp32: far past L2 (a second pass finds little of it there)

KBENCH = {
    "dtype": "float32", "atol": 0.0, "rtol": 0.0,
    "cpu_shapes": {"small": {"n": 3000}},
    "flops": lambda s: 0,
    "bytes": lambda s: 2 * 4 * s["n"],
}


class Model(nn.Module):
    def forward(self, x):
        if not x.is_cuda:
            return x.clone()
        y = torch.empty_like(x)
        _copy[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
        return y


def get_inputs():
    # x: [n]
    return [torch.randn(n)]


def get_init_inputs():
    return []
'''


def _candidate(calls: int) -> str:
    launch = "        _copy[(triton.cdiv(n, 1024),)](x, y, n, BLOCK=1024)\n"
    return _KERNELS + '''

class ModelNew(nn.Module):
    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        n = x.numel()
''' + launch * calls + "        return y\n"


SAME = _candidate(1)
TWICE = _candidate(2)  # the same work done twice: half the speed

SPIN_US = 200
# The copy, then every program waits until SPIN_NS have passed on the GPU's global timer
# (nanoseconds, independent of clocks): the call takes a known time. GPU only.
SPIN = f'''
import torch
import torch.nn as nn
import triton
import triton.language as tl

SPIN_NS = tl.constexpr({SPIN_US * 1000})


@triton.jit
def _now():
    return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64,
                                     is_pure=False, pack=1)


@triton.jit
def _copy(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask), mask=mask)
    now = _now()
    start = now
    while now - start < SPIN_NS:
        now = _now()


class ModelNew(nn.Module):
    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        n = x.numel()
        _copy[(triton.cdiv(n, 1024),)](x, y, n, BLOCK=1024)
        return y
'''
SPIN_PROBLEM = PROBLEM.replace(
    "n = 1 << 26  # 256 MiB in fp32: far past L2 (a second pass finds little of it there)",
    "n = 1024  # one program (a few on derived shapes, spinning side by side): the spin")


# CPU checks need correctness only: one trial per shape, one derived shape.
_QUICK = Limits(trials=1, derived_trials=1, max_derived=1)


def _spec(text: str, where: Path) -> Any:
    from sandbox.problem import load_file

    path = where / "selftest_problem.py"
    path.write_text(text)
    return load_file(path)


def cpu_rows(limits: Limits | None = None) -> list[Row]:
    """The self-test's kernels through the real verifier on CPU (Triton's interpreter):
    accepted, and untimed, with every speed figure null."""
    from sandbox.verifier import verify

    where = "verifier (cpu)"
    rows = []
    with tempfile.TemporaryDirectory(prefix="kbench-selftest-") as tmp:
        spec = _spec(PROBLEM, Path(tmp))
        for name, src in (("same kernel", SAME), ("work done twice", TWICE)):
            v = verify(spec, src, device="cpu", timing=True, limits=limits or _QUICK)
            ok, seen = _null_in_json(v)
            ok = (ok and v.status is Status.CORRECT and not v.timing_available
                  and v.speedup_eager is None and all(s.timing is None for s in v.shapes))
            rows.append(Row(f"untimed is null ({name}: accepted)", where,
                            "correct; no timing on a CPU; every speed figure null",
                            f"{v.status.value}; timing_available={v.timing_available}; "
                            f"{_count_null(seen)}"
                            if v.status is Status.CORRECT else f"{v.status.value}: {v.reason}",
                            ok))
    return rows


def gpu_rows(device: str = "cuda", limits: Limits | None = None) -> list[Row]:
    """The same kernels timed by the real verifier on ``device`` against a custom
    baseline (the problem's reference is the copy kernel itself), and the spin kernel."""
    from sandbox.baselines import MemoryCache
    from sandbox.verifier import verify

    where = "verifier (gpu)"
    rows = []
    cache = MemoryCache()
    with tempfile.TemporaryDirectory(prefix="kbench-selftest-") as tmp:
        spec = _spec(PROBLEM, Path(tmp))
        same = _main_only(verify(spec, SAME, device=device, cache=cache, limits=limits))
        twice = _main_only(verify(spec, TWICE, device=device, cache=cache, limits=limits))
        # floors: launch jitter on the same kernel; what L2 still holds for a second pass
        rows.append(_ratio_row("same kernel as candidate and custom baseline", where, same,
                               1.0, floor=0.03))
        rows.append(_ratio_row("work done twice", where, twice, 0.5, floor=0.06))
        s = twice.shapes[0] if twice.shapes else None
        ok = bool(s and s.timing and s.eager and twice.speedup_eager is not None
                  and twice.speedup_eager < 1.0 and s.timing.median_ms > s.eager.median_ms)
        rows.append(Row("slots not swapped", where, "candidate slower than its baseline, < 1x",
                        f"candidate {s.timing.median_ms:.4f} ms, baseline "
                        f"{s.eager.median_ms:.4f} ms" if ok and s and s.timing and s.eager
                        else f"{twice.status.value}: {twice.reason}", ok))
        spin_dir = Path(tmp) / "spin"
        spin_dir.mkdir()
        spin = _main_only(verify(_spec(SPIN_PROBLEM, spin_dir), SPIN, device=device,
                                 cache=cache, limits=limits))
        t = spin.shapes[0].timing if spin.shapes else None
        want = SPIN_US / 1e3
        ok = t is not None and want <= t.median_ms <= want * 1.05 + 0.02
        rows.append(Row(f"known spin of {SPIN_US} µs", where,
                        f"{want:.3f} ms to {want * 1.05 + 0.02:.3f} ms",
                        f"{t.median_ms:.4f} ms" if t else f"{spin.status.value}: {spin.reason}",
                        ok))
    return rows


def _main_only(v: Verdict) -> Verdict:
    """The verdict with its main shape first (the one the problem's constants declare)."""
    timed = [s for s in v.shapes if s.timing is not None]
    return replace(v, shapes=tuple(timed + [s for s in v.shapes if s.timing is None]))


def run(gpu: bool = False, cpu: bool = True, judge: Judge = real_judge) -> list[Row]:
    """Every row: the fake device's, the CPU verifier's (``cpu``), the GPU's (``gpu``)."""
    rows = fake_rows(judge)
    if cpu:
        rows += cpu_rows()
    if gpu:
        rows += gpu_rows()
    return rows
