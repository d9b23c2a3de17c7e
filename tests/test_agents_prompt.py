"""Prompts: rules, problem, device facts, roofline, example, and the verifier's feedback."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.prompt import build_messages, summary_line, trim, verdict_feedback
from agents.providers import Completion
from agents.records import Attempt, Task
from kbench.problems import load_file
from sandbox.verdict import ShapeResult, Status, Timing, Verdict

RELU = Path(__file__).resolve().parents[1] / "problems" / "level1" / "relu.py"
EXAMPLE = "import triton\n\nclass ModelNew:  # example\n    pass\n"
CODE = "import triton\n\nclass ModelNew:\n    pass\n"


@pytest.fixture(scope="module")
def problem():
    return load_file(RELU, key="level1/relu", suite="level1")


def task(problem, **kw) -> Task:
    kw.setdefault("example", EXAMPLE)
    return Task(problem, **kw)


def timing(ms: float) -> Timing:
    return Timing(median_ms=ms, iqr_ms=0.01, mean_ms=ms, min_ms=ms, count=50, rse=0.01)


def attempt(verdict: Verdict | None, code: str | None = CODE, turn: int = 0,
            finish: str = "stop") -> Attempt:
    return Attempt(0, turn, Completion("reply", finish_reason=finish), code, verdict)


def verdict(status: Status, reason: str = "", shapes=(), **kw) -> Verdict:
    return Verdict(problem="level1/relu", status=status, reason=reason, device="cuda:0",
                   backend="triton", shapes=tuple(shapes), **kw)


def test_first_turn_has_everything(problem) -> None:
    device = {"name": "NVIDIA H100", "sms": 132, "bandwidth_gbs": 3012.5}
    system, user = build_messages(task(problem, device=device, roofline_ms={"main": 0.0444}))
    assert system["role"] == "system" and user["role"] == "user"
    for rule in ("try/except", "streams", "caching", "file, network", "batch 1",
                 "Never modify the inputs", "own kernels"):
        assert rule in system["content"]
    assert "Triton" in system["content"] and "```python" in system["content"]
    u = user["content"]
    assert problem.source.strip() in u and "level1/relu" in u
    assert "NVIDIA H100" in u and "SMs: 132" in u and "3012.5 GB/s" in u
    assert "matmul peak: unknown" in u
    assert "0.0444 ms" in u
    assert EXAMPLE.strip() in u
    assert "odd: batch_size=7, dim=1000003" in u  # declared shapes are shown
    assert "atol=0" in u
    assert "previous attempts" not in u


def test_cuda_backend_and_no_roofline(problem) -> None:
    system, user = build_messages(task(problem, backend="cuda"))
    assert "load_inline" in system["content"] and "in CUDA" in user["content"]
    assert "Speed of light" not in user["content"]
    assert "name: unknown" in user["content"]


def test_bad_backend_is_refused(problem) -> None:
    with pytest.raises(ValueError, match="backend"):
        Task(problem, backend="metal")


def test_compile_error_feedback_is_trimmed(problem) -> None:
    log = "\n".join(f"line {i}: error" for i in range(200))
    v = verdict(Status.COMPILE_ERROR, reason=log)
    _, user = build_messages(task(problem), [attempt(v)])
    u = user["content"]
    assert "Status: compile_error" in u and CODE.strip() in u
    assert "line 0: error" in u and "line 199: error" in u and "line 100: error" not in u
    assert "lines omitted" in u
    assert len(trim(log).splitlines()) <= 40


def test_mismatch_and_unseen_shapes(problem) -> None:
    v = verdict(Status.INCORRECT, reason="wrong on 1 of 2 shapes", shapes=[
        ShapeResult("main", {"batch_size": 16, "dim": 1 << 20}, False, 3, True),
        ShapeResult("derived_batch1", {"batch_size": 1, "dim": 1 << 20}, True, 3, False,
                    reason="1024 of 1048576 elements differ", max_abs_err=2.5),
    ])
    text = verdict_feedback(v)
    assert "main batch_size=16" in text and ": correct" in text
    assert "unseen shape 1: WRONG (max abs err 2.5): 1024 of 1048576" in text
    assert "batch_size=1," not in text  # an unseen shape's sizes stay unseen


def test_timing_feedback(problem) -> None:
    v = verdict(Status.CORRECT, shapes=[ShapeResult(
        "main", {"batch_size": 16, "dim": 1 << 20}, False, 3, True, timing=timing(0.05),
        eager=timing(0.06), compiled=timing(0.055), speedup_eager=1.2, speedup_compile=1.1,
        roofline_ms=0.044, sol_pct=88.0)], speedup_eager=1.2, speedup_compile=1.1,
        sol_pct=88.0, timing_available=True)
    text = verdict_feedback(v)
    assert "| main batch_size=16, dim=1048576 | 0.05 ms | 0.06 ms | 0.055 ms | 1.20x | 1.10x | 88% |" in text
    assert "Overall: 1.20x vs eager, 1.10x vs torch.compile, 88% of speed of light." in text


def test_no_timing_is_said_not_invented() -> None:
    text = verdict_feedback(verdict(Status.CORRECT, timing_available=False))
    assert "not available" in text and "?" not in text


def test_history_summary_and_latest_feedback(problem) -> None:
    first = attempt(verdict(Status.COMPILE_ERROR, reason="SyntaxError: bad\nmore"), turn=0)
    failed_call = Attempt(0, 1, Completion("", error="server error 500", error_kind="server"),
                          None)
    third = attempt(None, code=None, turn=2, finish="length")
    _, user = build_messages(task(problem), [first, failed_call, third])
    u = user["content"]
    assert "- turn 0: compile_error: SyntaxError: bad" in u
    assert "- turn 1: no reply (provider error)" in u
    assert "- turn 2: no code found (reply cut off)" in u
    assert "Your last attempt (turn 2)" in u and "cut off at the token limit" in u


def test_summary_line_of_correct_attempt() -> None:
    v = verdict(Status.CORRECT, speedup_eager=1.5, timing_available=True)
    assert summary_line(attempt(v, turn=3)) == "turn 3: correct, 1.50x vs eager"

