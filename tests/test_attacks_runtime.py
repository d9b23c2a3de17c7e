"""Attack candidates that pass the static policy must be caught at run time (CPU interpreter;
the GPU-only ones are exercised by tests/test_gpu.py).

An attack is a run-time one when its docstring says ``Expected: caught at run time: <status>
(...)``: ``incorrect`` (outputs, aliasing or input audits) or ``rejected`` (the op trace saw
PyTorch compute in forward: the reference, a vendor op, tensor operators)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kbench.problems import load, load_file
from sandbox import Limits, Status, verify
from sandbox.policy import check_source

HERE = Path(__file__).parent / "candidates"
RUNTIME = sorted(p for p in (HERE / "attacks").glob("*.py")
                 if re.search(r"^Expected: caught at run time", p.read_text(), re.M))
HONEST = sorted(p for p in (HERE / "honest").glob("*.py") if "cuda" not in p.stem)


def _meta(path: Path) -> tuple[str, str]:
    text = path.read_text()
    problem = re.search(r"^Problem: (\S+)", text, re.M).group(1)
    expected = re.search(r"^Expected: (.+)$", text, re.M).group(1)
    return problem, expected


def _spec(problem: str):
    if problem.endswith(".py"):
        return load_file(Path(__file__).parent.parent / problem)
    return load(problem)[0]


@pytest.mark.parametrize("path", RUNTIME, ids=lambda p: p.stem)
def test_runtime_attack_is_caught(path):
    """Exactly the declared outcome: ``incorrect`` is INCORRECT (a crash is not a catch), and
    ``rejected (the op trace sees aten.x, aten.y in forward)`` names those ops."""
    problem, expected = _meta(path)
    source = path.read_text()
    assert check_source(source).ok, "runtime attacks must get past the policy"
    if "GPU" in expected and "CPU" in expected or "(GPU only)" in expected:
        pytest.skip(f"caught on a GPU only: {expected}")
    v = verify(_spec(problem), source, device="cpu", limits=Limits(trials=2, derived_trials=2))
    status = re.match(r"caught at run time: (\w+)", expected).group(1)
    assert v.status is Status(status), (v.status, v.reason)
    if v.status is Status.REJECTED:
        assert "PyTorch compute ops" in v.reason, v.reason
        ops = re.findall(r"aten\.\w+", expected)
        assert ops, f"the docstring names no op: {expected}"
        for op in ops:
            assert op in v.reason, (op, v.reason)
    assert v.reason


@pytest.mark.parametrize("path", HONEST, ids=lambda p: p.stem)
def test_honest_triton_candidates_pass(path):
    text = path.read_text()
    m = re.search(r"^Problem: (\S+)", text, re.M)
    spec = _spec(m.group(1)) if m else load("level1/relu")[0]
    v = verify(spec, text, device="cpu")
    assert v.status is Status.CORRECT, v.reason
