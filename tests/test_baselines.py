"""Baselines without a GPU: measured through the run callback once, then served from the
cache, failures included (so a failing ``torch.compile`` is not retried every time)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from sandbox.baselines import MemoryCache, _baselines
from sandbox.cases import _Case
from sandbox.timing import RawTimes


def test_baselines_are_measured_once_and_failures_are_cached(tmp_path: Path) -> None:
    spec = SimpleNamespace(key="level1/relu", source_hash="abc")
    cases = [_Case("small", {"N": 8}, False, True, 1), _Case("big", {"N": 64}, False, True, 2),
             _Case("derived", {"N": 9}, True, False, 3)]
    calls: list[tuple[str, list[str]]] = []

    def run(sub: Path, mode: str, todo: list[_Case]) -> tuple[dict[str, RawTimes], str]:
        calls.append((mode, [c.name for c in todo]))
        ms = [1.0, 1.1, 0.9, 1.0, 1.05]
        return {"small": RawTimes(ms, ms)}, "big: compile failed"

    cache = MemoryCache()
    work = tmp_path / "a"
    work.mkdir()
    out = _baselines(spec, cases, work, cache, {"gpu": "x"}, "fp", run)
    assert calls == [("eager", ["small", "big"]), ("compile", ["small", "big"])]
    assert out[("small", "eager")] is not None and out[("big", "eager")] is None
    failed = cache.baselines[("level1/relu", "abc", "big", "compile", "fp")]
    assert failed.timing.count == 0 and failed.payload == {"error": "big: compile failed"}

    work = tmp_path / "b"
    work.mkdir()
    again = _baselines(spec, cases, work, cache, {"gpu": "x"}, "fp", run)
    assert len(calls) == 2, "the second verification is served from the cache"
    assert again == out


def test_timed_verdict_takes_speedups_from_the_baselines() -> None:
    from sandbox.job import Limits
    from sandbox.judge import _Outcome, _with_timing
    from sandbox.verdict import ShapeResult, Status, Timing, Verdict

    spec = SimpleNamespace(roofline=lambda params: (None, None), meta=SimpleNamespace(dtype=None))
    shapes = (ShapeResult("small", {"N": 8}, False, 1, True),
              ShapeResult("derived", {"N": 9}, True, 1, True))
    verdict = Verdict(problem="p", status=Status.CORRECT, reason="ok", device="cuda",
                      backend="triton", shapes=shapes)
    ms = [1.0, 1.0, 1.0, 1.0]
    res = _Outcome(raw={"small": RawTimes(ms, ms)})
    eager = Timing(2.0, 2.0, 2.0, 2.0, 4, 0.0)
    out = _with_timing(verdict, spec, res, {("small", "eager"): eager, ("small", "compile"): None},
                       {"gpu": "cpu"}, Limits())
    assert out.status is Status.CORRECT and out.timing_available
    assert out.shapes[0].speedup_eager == 2.0 and out.shapes[0].speedup_compile is None
    assert out.speedup_eager == 2.0 and out.shapes[1].timing is None

    hidden = _Outcome(raw={"small": RawTimes(ms, [5.0] * 4)})
    out = _with_timing(verdict, spec, hidden, {}, {"gpu": "cpu"}, Limits())
    assert out.status is Status.REJECTED and "outlasts its timed stream" in out.reason


def test_measure_baselines_on_cpu_measures_nothing_and_starts_no_child(monkeypatch) -> None:
    """Nothing is timed on CPU, so a run's ahead-of-time baselines are a no-op there."""
    from kbench.problems import load
    from sandbox import MemoryCache, measure_baselines
    from sandbox.backends import get_backend

    backend = get_backend("subprocess")
    monkeypatch.setattr(backend, "start", lambda *a: (_ for _ in ()).throw(AssertionError))
    cache = MemoryCache()
    assert measure_baselines(load("level1/relu")[0], cache, device="cpu",
                             isolation=backend) == {}
    assert cache.baselines == {}
