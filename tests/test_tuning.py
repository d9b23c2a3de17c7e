"""Tuning on CPU: the knob space (TUNE, lifted @triton.autotune, bad spaces), and an Optuna
study whose trials are real verifications in Triton's interpreter. CPU has no timing, so the
tests pass ``objective=`` — a fake time from the knobs that replaces ONLY the timing; the
correctness check of every trial and of the stored best config is the real verifier's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from kbench.errors import ConfigError
from kbench.store import Store
from kbench.tuning import GPU_NEEDED, MAX_COMBINATIONS, apply, defaults, space, tune
from sandbox import verify
from sandbox.problem import load_file

REPO = Path(__file__).resolve().parents[1]

# y = 2x on two CPU shapes: "small" is the primary (tuned first), "large" the other.
PROBLEM = '''
import torch
import torch.nn as nn

N = 1000
KBENCH = {"cpu_shapes": {"small": {"N": 100}, "large": {"N": 700}}, "derive": False}


class Model(nn.Module):
    def forward(self, x):
        return x * 2


def get_inputs():
    return [torch.randn(N)]


def get_init_inputs():
    return []
'''

# BLOCK=48 is not a power of two: tl.arange refuses it, so that trial must fail.
CANDIDATE = '''
import torch
import torch.nn as nn
import triton
import triton.language as tl

BLOCK = 32
TUNE = {"BLOCK": [16, 32, 48, 64]}


@triton.jit
def _double(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=m) * 2.0, mask=m)


class ModelNew(nn.Module):
    def forward(self, x):
        y = torch.empty_like(x)
        n = x.numel()
        _double[(triton.cdiv(n, BLOCK),)](x, y, n, BLOCK=BLOCK)
        return y
'''

AUTOTUNED = (REPO / "tests" / "candidates" / "honest" / "relu_triton_autotune.py").read_text()

# Test-only timing: BLOCK=16 is clearly losing (5x the default's time on the primary shape).
FAKE_MS = {16: 5.0, 32: 1.0, 48: 1.0, 64: 1.1}


def fake_objective(knobs: dict, shape: str) -> float:
    return FAKE_MS[knobs["BLOCK"]] * (1.0 if shape == "small" else 7.0)


# -- the space ---------------------------------------------------------------------------

def test_space_from_tune_dict_and_defaults() -> None:
    assert space(CANDIDATE) == {"BLOCK": [16, 32, 48, 64]}
    assert defaults(CANDIDATE) == {"BLOCK": 32}
    assert apply(CANDIDATE, {"BLOCK": 64}) == (CANDIDATE, {"BLOCK": 64})


def test_space_lifts_autotune_configs_and_apply_rewrites_to_one() -> None:
    sp = space(AUTOTUNED)
    assert sp == {"relu_kernel.BLOCK": [256, 1024, 4096], "relu_kernel.num_warps": [2, 4, 8]}
    src, plain = apply(AUTOTUNED, {"relu_kernel.BLOCK": 1024, "relu_kernel.num_warps": 8})
    assert plain == {}
    assert "triton.Config({'BLOCK': 1024}, num_warps=8)]" in src
    assert "4096" not in src and space(src) == {"relu_kernel.BLOCK": [1024],
                                                "relu_kernel.num_warps": [8]}
    with pytest.raises(ConfigError, match="not a lifted"):
        apply(AUTOTUNED, {"relu_kernel.GROUP": 1})


def test_rewritten_autotune_still_verifies() -> None:
    from kbench.problems import load

    src, _ = apply(AUTOTUNED, {"relu_kernel.BLOCK": 256, "relu_kernel.num_warps": 2})
    v = verify(load("level1/relu")[0], src, device="cpu", timing=False)
    assert v.passed, v.reason


@pytest.mark.parametrize("tune_line, message", [
    ("TUNE = [64, 128]", "must be a dict"),
    ("TUNE = {'BLOCK': make()}", "must be a literal dict of lists"),
    ("TUNE = {'BLOCK': []}", "non-empty list"),
    ("TUNE = {'BLOCK': 64}", "non-empty list"),
    ("TUNE = {'BLOCK': [(1, 2)]}", "int, float, bool or str"),
    ("TUNE = {'BLOCK': [64, 64]}", "lists a value twice"),
    ("TUNE = {'NOPE': [1, 2]}", "not a module-level global"),
    ("TUNE = {'BLOCK': list(range(200)), 'W': list(range(100))}", "literal"),
])
def test_bad_spaces_are_one_line_config_errors(tune_line: str, message: str) -> None:
    src = f"BLOCK = 64\nW = 1\n{tune_line}\n"
    with pytest.raises(ConfigError, match=message) as e:
        space(src)
    assert "\n" not in str(e.value)


def test_too_many_combinations() -> None:
    big = {f"K{i}": list(range(10)) for i in range(5)}
    src = "".join(f"K{i} = 0\n" for i in range(5)) + f"TUNE = {big!r}\n"
    with pytest.raises(ConfigError, match=f"more than the {MAX_COMBINATIONS}"):
        space(src)


# -- a study -----------------------------------------------------------------------------

@pytest.fixture
def problem(tmp_path: Path):
    p = tmp_path / "double.py"
    p.write_text(PROBLEM)
    return load_file(p)


def test_cpu_without_timing_is_refused(problem, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        tune(problem, CANDIDATE, device="cpu", storage_url=str(tmp_path / "k.db"))


def test_study_prunes_fails_resumes_and_stores_the_reverified_best(problem, tmp_path) -> None:
    db = tmp_path / "run.db"
    kw = dict(device="cpu", storage_url=str(db), study_name="s", sampler="grid", seed=0,
              objective=fake_objective)
    first = tune(problem, CANDIDATE, n_trials=2, **kw)
    assert first.evaluated == 2 and first.default_ms == 1.0  # the default config goes first
    second = tune(problem, CANDIDATE, n_trials=5, **kw)  # resumes the same study
    assert second.evaluated == 2 and second.trials > first.trials
    assert "every one of the 4 configurations is evaluated" in second.notes

    # Optuna's own tables, in the run's database file.
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(len(numbers)))  # the second call continued the count
    by_block = {t.user_attrs["knobs"]["BLOCK"]: t for t in study.trials
                if "repeat_of" not in t.user_attrs}
    assert set(by_block) == {16, 32, 48, 64}
    assert by_block[32].state == optuna.trial.TrialState.COMPLETE and by_block[32].value == 1.0
    assert by_block[64].state == optuna.trial.TrialState.COMPLETE
    losing = by_block[16]  # pruned on the primary shape: never verified on "large"
    assert losing.state == optuna.trial.TrialState.PRUNED
    assert losing.user_attrs["ms"] == {"small": 5.0} and "pruned on shape 'small'" in losing.user_attrs["reason"]
    broken = by_block[48]
    assert broken.state == optuna.trial.TrialState.FAIL and broken.value is None
    assert broken.user_attrs["status"] == "runtime_error"
    assert "power of 2" in broken.user_attrs["reason"]

    assert {s: b.knobs for s, b in second.best.items()} == {"small": {"BLOCK": 32},
                                                            "large": {"BLOCK": 32}}
    rows = Store(str(db)).tuned_configs(problem_key=problem.key)
    assert {(r.shape_name, r.knobs["BLOCK"], r.median_ms) for r in rows} == {
        ("small", 32, 1.0), ("large", 32, 7.0)}
    assert all(r.trials == 4 and r.study_name == "s" for r in rows)


def test_best_is_reverified_on_every_shape(problem, tmp_path: Path) -> None:
    # BLOCK=64 is "fastest" by the fake timing, but its kernel is wrong on every shape but
    # the primary: it must never be stored.
    wrong_past_primary = CANDIDATE.replace(
        "* 2.0, mask=m)", "* tl.where(n > 100, 3.0, 2.0), mask=m)").replace(
        'TUNE = {"BLOCK": [16, 32, 48, 64]}', 'TUNE = {"BLOCK": [32, 64]}')

    def objective(knobs: dict, shape: str) -> float:
        return {32: 2.0, 64: 1.0}[knobs["BLOCK"]]

    r = tune(problem, wrong_past_primary, device="cpu", storage_url=str(tmp_path / "r.db"),
             n_trials=2, sampler="grid", shapes=["small"], objective=objective, seed=0)
    assert r.complete == 2  # tuned on "small" alone, both configs looked correct and fast
    # ...but n > 100 makes every config wrong on "large"; re-verification catches it.
    assert r.best == {} and any("failed re-verification" in n for n in r.notes)
    assert Store(str(tmp_path / "r.db")).tuned_configs() == []


def test_unknown_sampler_and_shape(problem, tmp_path: Path) -> None:
    kw = dict(device="cpu", storage_url=str(tmp_path / "k.db"), objective=fake_objective)
    with pytest.raises(ConfigError, match="unknown sampler"):
        tune(problem, CANDIDATE, sampler="anneal", **kw)
    with pytest.raises(ConfigError, match="unknown shape"):
        tune(problem, CANDIDATE, shapes=["huge"], **kw)
    with pytest.raises(ConfigError, match="declares no knobs"):
        tune(problem, CANDIDATE.replace('TUNE = {"BLOCK": [16, 32, 48, 64]}', ""), **kw)


# -- the command line --------------------------------------------------------------------

def kbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kbench.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120)


def one_line_error(r: subprocess.CompletedProcess, fragment: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert fragment in r.stderr, r.stderr


def test_cli_tune_on_cpu_says_it_needs_a_gpu(tmp_path: Path) -> None:
    (tmp_path / "cand.py").write_text(CANDIDATE)
    r = kbench("tune", "cand.py", "--problem", "level1/relu", "--device", "cpu", cwd=tmp_path)
    one_line_error(r, GPU_NEEDED.split(":")[0])


def test_cli_tune_bad_candidate_path_and_bad_run(tmp_path: Path) -> None:
    one_line_error(kbench("tune", "nope.py", "--problem", "level1/relu", cwd=tmp_path),
                   "candidate nope.py: no such file")
    one_line_error(kbench("tune", "no-such-run", "--store", "k.db", cwd=tmp_path),
                   "neither a candidate file nor a run")
