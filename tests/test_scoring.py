"""fast_p and friends, checked against hand-computed values."""

from __future__ import annotations

import doctest
import math

import pytest

import kbench.scoring
from kbench.scoring import best_verdict, fast_p, geomean_speedup, mean_sol, summary
from sandbox.verdict import ShapeResult, Status, Timing, Verdict


def _v(
    status: Status = Status.CORRECT,
    eager: float | None = None,
    compile: float | None = None,
    sol: float | None = None,
    reason: str = "",
) -> Verdict:
    t = Timing(median_ms=1.0, iqr_ms=0.1, mean_ms=1.0, min_ms=0.9, count=10, rse=0.01)
    shape = ShapeResult(name="base", params={"N": 9}, derived=False, trials=1,
                        passed=status.passed, timing=t if eager is not None else None)
    return Verdict("s/p", status, reason, "cuda:0", "triton", shapes=(shape,),
                   speedup_eager=eager, speedup_compile=compile, sol_pct=sol,
                   timing_available=eager is not None)


# 6 attempted problems: 4 correct (one untimed), 1 wrong but "fast", 1 with no candidate.
RESULTS = {
    "a": _v(eager=2.5, compile=1.2, sol=60.0),
    "b": _v(eager=1.0, compile=0.5, sol=20.0),  # exactly 1.0: not faster than eager
    "c": _v(eager=1.5, compile=1.5),  # exactly 1.5 on both
    "d": _v(),  # correct, timing unavailable
    "e": _v(Status.INCORRECT, eager=10.0, compile=10.0, sol=99.0),
    "f": None,
}


@pytest.mark.parametrize(
    "p, baseline, expected",
    [
        (0, "eager", 4 / 6),  # a b c d: correctness rate, untimed d included
        (0, "compile", 4 / 6),
        (0.5, "eager", 3 / 6),  # a b c; d has no timing
        (0.5, "compile", 2 / 6),  # a c; b is exactly 0.5
        (1, "eager", 2 / 6),  # a c; b == 1.0 is not > 1
        (1, "compile", 2 / 6),  # a 1.2, c 1.5
        (1.5, "eager", 1 / 6),  # a; c == 1.5 is not > 1.5
        (1.5, "compile", 0.0),
        (2, "eager", 1 / 6),
        (3, "eager", 0.0),  # e's 10x is incorrect and never counts
    ],
)
def test_fast_p_hand_computed(p: float, baseline: str, expected: float) -> None:
    assert fast_p(RESULTS, p, baseline) == pytest.approx(expected)  # type: ignore[arg-type]


def test_fast_p_denominator_and_inputs() -> None:
    assert fast_p(RESULTS, 1, total=10) == pytest.approx(2 / 10)
    assert fast_p(list(RESULTS.items()), 1) == pytest.approx(2 / 6)  # pairs, as Store.results
    as_dicts = {k: None if v is None else v.to_dict() for k, v in RESULTS.items()}
    for p in (0, 1, 1.5, 2):
        for b in ("eager", "compile"):
            assert fast_p(as_dicts, p, b) == fast_p(RESULTS, p, b)
    assert fast_p({}, 1) == 0.0
    assert fast_p({"x": None, "y": None}, 0) == 0.0
    with pytest.raises(ValueError):
        fast_p(RESULTS, 1, total=3)
    with pytest.raises(ValueError):
        fast_p(RESULTS, -1)
    with pytest.raises(ValueError):
        fast_p(RESULTS, 1, "inductor")  # type: ignore[arg-type]


def test_untimed_correct_counts_only_for_fast_0() -> None:
    res = {"cpu_only": _v()}
    assert fast_p(res, 0) == 1.0
    assert fast_p(res, 0.001) == 0.0
    assert geomean_speedup(res) is None


def test_status_decides_over_a_stale_passed_flag() -> None:
    d = _v(Status.REJECTED, eager=50.0, reason="beats the roofline").to_dict()
    d["passed"] = True  # a forged or stale copy must not count
    assert fast_p({"x": d}, 1) == 0.0


def test_geomean_and_mean_sol() -> None:
    assert geomean_speedup(RESULTS) == pytest.approx((2.5 * 1.0 * 1.5) ** (1 / 3))
    assert geomean_speedup(RESULTS, "compile") == pytest.approx((1.2 * 0.5 * 1.5) ** (1 / 3))
    assert mean_sol(RESULTS) == pytest.approx(40.0)  # e's 99% is incorrect
    assert geomean_speedup({"x": None}) is None and mean_sol({}) is None


def test_one_geomean_for_the_scores_and_the_verifier(monkeypatch) -> None:
    """sandbox.stats.geomean is the one implementation: scoring delegates to it."""
    import sandbox.stats
    from sandbox.stats import geomean

    assert geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert geomean([4.0, None, 0.0, -1.0, math.nan, math.inf]) == pytest.approx(4.0)
    assert geomean([]) is None and geomean([None, 0.0]) is None
    assert kbench.scoring.geomean is sandbox.stats.geomean
    seen = []
    monkeypatch.setattr(kbench.scoring, "geomean", lambda xs: seen.append(list(xs)) or 7.0)
    assert geomean_speedup(RESULTS) == 7.0 and seen == [[2.5, 1.0, 1.5, None]]  # d: untimed


def test_best_verdict_order() -> None:
    slow, fast, untimed = _v(eager=1.1), _v(eager=2.0), _v()
    fail1, fail2 = _v(Status.INCORRECT, eager=9.0), _v(Status.COMPILE_ERROR)
    assert best_verdict([slow, fast, untimed, fail1]) is fast
    assert best_verdict([untimed, slow]) is slow  # timed beats untimed
    assert best_verdict([fail1, untimed]) is untimed  # correct beats everything
    assert best_verdict([fail1, fail2]) is fail2  # no correct: the latest
    same1, same2 = _v(eager=2.0, reason="1"), _v(eager=2.0, reason="2")
    assert best_verdict([same1, same2]) is same2  # tie: the latest
    assert best_verdict([]) is None
    dicts = [fail1.to_dict(), fast.to_dict(), slow.to_dict()]
    assert best_verdict(dicts) is dicts[1]


def test_summary() -> None:
    s = summary(RESULTS)
    assert (s.n_problems, s.n_correct, s.n_timed) == (6, 4, 3)
    assert s.fast(0) == pytest.approx(4 / 6) and s.fast(1.5) == pytest.approx(1 / 6)
    assert s.fast(1, "compile") == pytest.approx(2 / 6)
    assert s.mean_sol_pct == pytest.approx(40.0)
    d = s.to_dict()
    assert set(d["fast_p"]["eager"]) == {"fast_0", "fast_1", "fast_1.5", "fast_2"}
    assert d["fast_p"]["compile"]["fast_1.5"] == 0.0
    assert math.isclose(d["geomean_speedup_eager"], s.geomean_speedup_eager)
    assert summary(RESULTS, total=12).fast(0) == pytest.approx(4 / 12)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(kbench.scoring)
    assert result.attempted > 0 and result.failed == 0


def test_one_output_type_check_for_the_verifier_and_the_problem_checks(monkeypatch) -> None:
    """reference_ops.checks.tensor_reason is the one type/shape/dtype/device check: the
    verifier's comparison and the selection, top-k routing and KV-selection checks use it."""
    import torch

    import reference_ops.checks
    import reference_ops.kvcache_select
    import reference_ops.moe
    import reference_ops.selection
    import sandbox.compare

    for mod in (sandbox.compare, reference_ops.selection, reference_ops.moe,
                reference_ops.kvcache_select):
        assert mod.tensor_reason is reference_ops.checks.tensor_reason, mod.__name__
    ref = torch.zeros(2, 3)
    half = ref.half()
    assert sandbox.compare.check_output_type(half, ref) == \
        "output dtype torch.float16 != expected torch.float32"
    x = torch.randn(4, 8)
    vals, idx = torch.topk(x, 2)
    assert reference_ops.selection.check_topk_last((vals.half(), idx), (vals, idx), [x]) == \
        "values dtype torch.float16 != expected torch.float32"
    assert reference_ops.kvcache_select.outputs_reason((idx.int(),), (idx,)) == \
        "output[0] dtype torch.int32 != expected torch.int64"
    monkeypatch.setattr(sandbox.compare, "tensor_reason", lambda *a: "one check")
    assert sandbox.compare.compare_outputs(ref, ref, 1e-3, 1e-3)[0].reason == "one check"
