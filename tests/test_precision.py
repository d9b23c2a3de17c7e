"""Precision parity (issue 17): every child runs under the parent's recorded precision
settings, a candidate that changes them is rejected, and a problem may declare its own.
Also `kbench doctor`'s isolation layers (issue 12)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kbench.cli import app
from kbench.problems import load
from sandbox import Limits, Status, verify
from sandbox.errors import ProblemError
from sandbox.precision import DEFAULTS
from sandbox.problem import load_file
from sandbox.verdict import Verdict
from tests.fakes.relu import RELU as _FAKE_RELU

FAST = Limits(import_s=120, check_s=60, trials=2, derived_trials=2)

# tests.fakes.relu's candidate with a {prelude} before the kernel and a {check} at the top of
# forward (no braces of its own, so str.format fills both)
RELU = _FAKE_RELU.replace("\n\n@triton.jit", "\n{prelude}\n\n@triton.jit").replace(
    "        x = x.contiguous()\n", "        {check}\n        x = x.contiguous()\n")

# Raises unless the settings in effect are the expected ones: the settings reach the child.
CHECK = ('if (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32) '
         '!= ({want!r}, {tf32}): raise RuntimeError("precision not applied: " '
         '+ torch.get_float32_matmul_precision())')


def candidate(prelude: str = "", check: str = "pass") -> str:
    return textwrap.dedent(RELU).format(prelude=prelude, check=check)


@pytest.fixture(scope="module")
def relu():
    return load("level1/relu")[0]


@pytest.fixture(scope="module")
def relu_high(tmp_path_factory):
    src = (Path(load("level1/relu")[0].path)).read_text().replace(
        '"dtype": "float32",', '"dtype": "float32", "precision": '
        '{"float32_matmul_precision": "high", "cudnn_benchmark": True},')
    path = tmp_path_factory.mktemp("prec") / "relu_high.py"
    path.write_text(src)
    return load_file(path)


def test_default_settings_are_applied_recorded_and_explained(relu):
    v = verify(relu, candidate(check=CHECK.format(want="highest", tf32=False)),
               device="cpu", limits=FAST, static_policy=False)
    assert v.status is Status.CORRECT, v.reason
    assert v.precision == DEFAULTS
    assert v.explain["precision"]["applied"] == DEFAULTS
    assert v.explain["precision"]["seen"]["import"] == DEFAULTS
    assert v.explain["precision"]["seen"]["trials"] == DEFAULTS


def test_settings_applied_even_if_the_parent_differs(relu):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True  # the parent's state never leaks into a child
    try:
        v = verify(relu, candidate(check=CHECK.format(want="highest", tf32=False)),
                   device="cpu", limits=FAST, static_policy=False)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
    assert v.status is Status.CORRECT, v.reason


def test_problem_declared_precision_reaches_the_child(relu_high):
    assert relu_high.precision["float32_matmul_precision"] == "high"
    assert relu_high.precision["allow_tf32"] is True
    v = verify(relu_high, candidate(check=CHECK.format(want="high", tf32=True)),
               device="cpu", limits=FAST, static_policy=False)
    assert v.status is Status.CORRECT, v.reason
    assert v.precision["float32_matmul_precision"] == "high"
    assert v.precision["cudnn_benchmark"] is True


@pytest.mark.parametrize("where", ["import", "forward"])
def test_candidate_that_flips_allow_tf32_is_rejected(relu, where):
    flip = "torch.backends.cuda.matmul.allow_tf32 = True"
    src = candidate(prelude=flip) if where == "import" else candidate(check=flip)
    v = verify(relu, src, device="cpu", limits=FAST, static_policy=False)
    assert v.status is Status.REJECTED
    assert "changed the matmul precision settings (allow_tf32 False -> True" in v.reason


@pytest.mark.parametrize("bad", [
    {"float32_matmul_precision": "fast"},
    {"allow_tf32": "yes"},
    {"allow_tf32": False, "float32_matmul_precision": "high"},
    {"tf32": True},
])
def test_bad_precision_declaration_is_a_one_line_problem_error(relu, tmp_path, bad):
    src = Path(relu.path).read_text().replace(
        '"dtype": "float32",', f'"dtype": "float32", "precision": {bad!r},')
    path = tmp_path / "bad.py"
    path.write_text(src)
    with pytest.raises(ProblemError) as e:
        load_file(path)
    assert "KBENCH.precision" in str(e.value)
    assert "\n" not in str(e.value)


def test_verdict_round_trip_with_and_without_precision():
    base = dict(problem="p", status=Status.CORRECT, reason="", device="cpu", backend="triton")
    v = Verdict(**base, precision=dict(DEFAULTS))
    assert Verdict.from_dict(json.loads(json.dumps(v.to_dict()))) == v
    old = Verdict(**base).to_dict()
    old.pop("precision")  # a record stored before the field existed
    assert Verdict.from_dict(old).precision is None


LAYERS = ["network namespace", "environment allowlist", "write confinement", "rlimits",
          "process-group kill", "output cap", "GPU-memory cap", "sandbox backend", "Docker"]


def test_doctor_reports_every_isolation_layer(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-fake")
    monkeypatch.setattr("kbench.cli._interpreter_check", lambda: "skipped in this test")
    r = CliRunner().invoke(app, ["doctor", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["isolation"]
    assert [x["layer"] for x in rows] == LAYERS
    by = {x["layer"]: x for x in rows}
    assert by["environment allowlist"]["status"] == "enforced"
    assert by["write confinement"]["status"] == "not enforced"
    # enforced only with a GPU, a fraction and NVML (tests/test_faults.py has each case)
    import torch

    from sandbox import memcap
    from sandbox.job import Limits

    assert by["GPU-memory cap"]["status"] == memcap.describe(
        torch.cuda.is_available(), Limits().gpu_memory_fraction, memcap.nvml_available())[0]
    assert all(x["status"] and x["detail"] for x in rows)


def test_no_secret_looking_variable_passes_the_allowlist(monkeypatch, tmp_path):
    from sandbox._process import child_env

    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
    monkeypatch.setenv("HF_TOKEN", "hf-fake")
    env = child_env(tmp_path, "cpu")
    assert not [k for k in env if k.endswith(("_KEY", "_TOKEN", "_SECRET"))]
    assert "sk-fake" not in env.values()
