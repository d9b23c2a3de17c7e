"""The command line as a user meets it: files that are not UTF-8, problem ids that must stay
whole, a broken problem file among good ones, JSON under --json whatever happens, and reading
commands that never create a store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import kbench.cli as cli
from kbench.errors import KbenchError
from kbench.problems import SUITES

REPO = Path(__file__).resolve().parents[1]
RELU = REPO / "problems" / "level1" / "relu.py"
NOT_UTF8 = b"import torch\n# caf\xe9 (latin-1)\n"
LONG = "a_problem_whose_name_is_far_longer_than_forty_columns"


def kbench(*args: str, cwd: Path, env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "KBENCH_STORE"} | (env or {})
    return subprocess.run([sys.executable, "-m", "kbench.cli", *args], cwd=cwd, text=True,
                          capture_output=True, env=full, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for f in fragments:
        assert f in r.stderr, r.stderr


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """A folder of problems: two good ones, three that cannot load for different reasons."""
    d = tmp_path / "suite"
    d.mkdir()
    (d / "relu.py").write_text(RELU.read_text())
    (d / f"{LONG}.py").write_text(RELU.read_text())
    (d / "broken.py").write_text("import torch\ndef forward(:\n")
    (d / "no_model.py").write_text("batch_size = 4\n")
    (d / "latin1.py").write_bytes(NOT_UTF8)
    return d


# -- files that are not UTF-8 -------------------------------------------------------------
def test_eval_candidate_not_utf8_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "cand.py").write_bytes(NOT_UTF8)
    r = kbench("eval", "--problem", "level1/relu", "--candidate", "cand.py", "--device", "cpu",
               cwd=tmp_path)
    one_line_error(r, "cand.py", "not UTF-8")
    r = kbench("eval", "--problem", "level1/relu", "--candidate", "cand.py", "--device", "cpu",
               "--json", cwd=tmp_path)
    one_line_error(r)
    assert "not UTF-8" in json.loads(r.stdout)["error"]


def test_eval_problem_not_utf8_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "prob.py").write_bytes(NOT_UTF8)
    (tmp_path / "cand.py").write_text("x = 1\n")
    r = kbench("eval", "--problem", "prob.py", "--candidate", "cand.py", "--device", "cpu",
               cwd=tmp_path)
    one_line_error(r, "prob.py", "not UTF-8")


def test_config_and_replay_files_not_utf8_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "kbench.toml").write_bytes(b'model = "caf\xe9"\n')
    one_line_error(kbench("run", "--problems", "level1/relu", cwd=tmp_path),
                   "kbench.toml", "not UTF-8")
    (tmp_path / "kbench.toml").unlink()
    (tmp_path / "rec.jsonl").write_bytes(b'{"problem": "level1/relu", "response": "\xe9"}\n')
    one_line_error(kbench("run", "--model", "replay:rec.jsonl", "--problems", "level1/relu",
                          "--device", "cpu", cwd=tmp_path), "rec.jsonl", "not UTF-8")


# -- problems list ---------------------------------------------------------------------------
def test_problem_ids_are_never_cut_when_piped(suite: Path) -> None:
    packaged = [f"{s}/{p.stem}" for s in SUITES for p in (REPO / "problems" / s).glob("*.py")
                if not p.name.startswith("_")]
    r = kbench("problems", "list", f"all,{suite}", cwd=suite, env={"COLUMNS": "30"})
    assert r.returncode == 1, r.stderr  # the suite's broken files
    words = r.stdout.split()
    missing = [k for k in [*packaged, LONG, "relu"] if k not in words]
    assert not missing, r.stdout
    assert "…" not in r.stdout


@pytest.mark.parametrize("width", [20, 60])
def test_problem_ids_are_never_cut_on_a_narrow_terminal(suite: Path, monkeypatch,
                                                        width: int) -> None:
    monkeypatch.setattr(cli, "out", Console(width=width, force_terminal=True, color_system=None))
    r = CliRunner().invoke(cli.app, ["problems", "list", f"level1,{suite}"])
    words = r.stdout.split()
    assert LONG in words and "level1/batched_matmul" in words, r.stdout


def test_a_broken_file_is_listed_with_its_error_and_the_rest_load(suite: Path) -> None:
    r = CliRunner().invoke(cli.app, ["problems", "list", str(suite)])
    assert r.exit_code == 1, r.output
    assert "2 problems; 3 could not be loaded" in r.stdout
    errors = {ln.split()[1]: ln for ln in r.stdout.splitlines() if ln.startswith("error ")}
    assert set(errors) == {"broken", "no_model", "latin1"}
    assert "SyntaxError" in errors["broken"] and "missing Model" in errors["no_model"]
    assert "not UTF-8" in errors["latin1"] and str(suite / "latin1.py") in errors["latin1"]


def test_problems_list_json_includes_errors(suite: Path) -> None:
    r = CliRunner().invoke(cli.app, ["problems", "list", str(suite), "--json"])
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert sorted(p["id"] for p in data["problems"]) == sorted([LONG, "relu"])
    assert sorted(e["id"] for e in data["errors"]) == ["broken", "latin1", "no_model"]
    assert all(e["path"].endswith(".py") and e["error"] for e in data["errors"])
    good = CliRunner().invoke(cli.app, ["problems", "list", "level1/relu", "--json"])
    assert good.exit_code == 0 and json.loads(good.stdout)["errors"] == []


# -- --json prints JSON whatever happens ---------------------------------------------------
@pytest.mark.parametrize("args", [
    ["problems", "list", "no_such_suite", "--json"],
    ["eval", "--problem", "no_such_suite", "--candidate", "x.py", "--json"],
    ["eval", "--problem", "level1/relu", "--candidate", "missing.py", "--json"],
    ["runs", "show", "nope", "--json"],
])
def test_json_commands_print_json_errors(tmp_path: Path, monkeypatch, args: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KBENCH_STORE", raising=False)
    r = CliRunner().invoke(cli.app, args)
    assert isinstance(r.exception, KbenchError)  # main() turns it into exit 2
    assert json.loads(r.stdout)["error"]


# -- reading commands never create a store -----------------------------------------------------
def test_runs_list_and_show_create_no_store(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KBENCH_STORE", raising=False)
    r = CliRunner().invoke(cli.app, ["runs", "list"])
    assert r.exit_code == 0 and "no runs yet (no store at" in r.stdout
    r = CliRunner().invoke(cli.app, ["runs", "list", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout) == []
    r = CliRunner().invoke(cli.app, ["runs", "show", "x", "--store", str(tmp_path / "s.db")])
    assert isinstance(r.exception, KbenchError) and "no store at" in str(r.exception)
    r = CliRunner().invoke(cli.app, ["run", "--resume", "x"])
    assert isinstance(r.exception, KbenchError) and "no store at" in str(r.exception)
    assert list(tmp_path.iterdir()) == []


# -- replay folders: an unmappable file is named ------------------------------------------------
def test_run_names_replay_files_that_map_to_no_problem(tmp_path: Path) -> None:
    task = tmp_path / "rk" / "level_1" / "task_7"
    task.mkdir(parents=True)
    (task / "7_relu.py").write_text("import torch\n")
    (task / "notes.py").write_text("# not a kernel\n")
    (tmp_path / "level1").mkdir()
    (tmp_path / "level1" / "7_relu.py").write_text(RELU.read_text())
    r = kbench("run", "--model", f"replay:{tmp_path / 'rk'}", "--problems",
               str(tmp_path / "level1"), "--device", "cpu", "--time-limit", "0.001",
               "--name", "w", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    [warning] = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert str(task / "notes.py") in warning and "maps to no problem" in warning


COPY_RELU = '''
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _copy(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)


class ModelNew(nn.Module):
    def forward(self, x):
        y = torch.empty_like(x)
        _copy[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
        return y
'''


def test_explain_says_which_checks_ran_and_which_failed(tmp_path: Path) -> None:
    cand = tmp_path / "copy_relu.py"
    cand.write_text(COPY_RELU)
    r = kbench("eval", "--problem", "level1/relu", "--candidate", str(cand), "--device", "cpu",
               "--explain", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    text = " ".join(r.stdout.split())
    for part in ("How this verdict was reached", "1. static policy (triton): passed",
                 "1x signed", "1x scaled", "(derived, never shown)", "4. every checked call traced",
                 "_copy (candidate)", "first failing check: shape 'small' trial 0"):
        assert part in text, (part, r.stdout)
    r = kbench("eval", "--problem", "level1/relu", "--candidate", str(cand), "--device", "cpu",
               "--json", "--explain", cwd=tmp_path)
    e = json.loads(r.stdout)["explain"]
    assert e["policy"]["violations"] == [] and "first_failure" in e
    assert any(t["kind"] == "signed" for c in e["cases"] for t in c["trials"])
    r = kbench("eval", "--problem", "level1/relu", "--candidate", str(cand), "--device", "cpu",
               "--json", cwd=tmp_path)
    assert "explain" not in json.loads(r.stdout)


def test_explain_names_the_rule_and_line_of_a_policy_rejection(tmp_path: Path) -> None:
    cand = tmp_path / "ref_relu.py"
    cand.write_text(COPY_RELU.replace("        y = torch.empty_like(x)\n",
                                      "        y = torch.empty_like(x)\n        act = torch.relu\n"))
    r = kbench("eval", "--problem", "level1/relu", "--candidate", str(cand), "--device", "cpu",
               "--explain", cwd=tmp_path)
    assert r.returncode == 1
    text = " ".join(r.stdout.split())
    assert "rule(s) fired" in text and "[reference-call] line 17" in text, r.stdout


def test_problems_show_says_what_is_checked_and_why_a_problem_opts_out(tmp_path: Path) -> None:
    (tmp_path / "sqrt_op.py").write_text(
        "import torch\nimport torch.nn as nn\nn = 64\n"
        "KBENCH = {'perturb': {'inputs': 'positive', 'params': False, "
        "'reason': 'sqrt is defined on x >= 0'}}\n"
        "class Model(nn.Module):\n    def forward(self, x):\n        return torch.sqrt(x)\n"
        "def get_inputs():\n    return [torch.rand(n, n)]\n"
        "def get_init_inputs():\n    return []\n")
    r = kbench("problems", "show", str(tmp_path / "sqrt_op.py"), "--no-source", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "perturbed non-negative inputs; parameters never redrawn" in text, r.stdout
    assert "problem's reason: sqrt is defined on x >= 0" in text
    assert "in train mode" in text


def test_explain_prints_the_timing_rule_and_each_sides_spread() -> None:
    """A timed verdict's explain shows the one sampling rule and, per shape and side, the
    median, spread, samples x calls per sample and a NOISY mark."""
    from types import SimpleNamespace

    from kbench import cli

    side = {"median_ms": 0.0123, "spread": 0.02, "samples": 40, "calls_per_sample": 8,
            "noisy": False}
    v = SimpleNamespace(passed=True, explain={"timing": {
        "rule": {"min_reps": 30, "min_measured_ms": 100.0, "target_rse": 0.005,
                 "budget_s": 1.5, "small_call_ms": 0.02, "noisy_spread": 0.1},
        "shapes": {"main": {"candidate": side, "eager": {**side, "spread": 0.31, "noisy": True}}},
    }})
    with cli.out.capture() as cap:
        cli._print_explain(v)
    text = " ".join(cap.get().split())  # as printed, less the console's line wrapping
    assert "at least 30 samples, 100.0 ms measured, then to 0.005" in text  # a protocol-4 record
    assert "main: candidate 0.0123 ms (spread 2.0%, 40 x 8 calls)" in text
    assert "eager 0.0123 ms (spread 31.0%, 40 x 8 calls, NOISY)" in text


def test_resume_finds_the_run_in_the_store_kbench_toml_names(tmp_path, monkeypatch):
    """`kbench run --resume NAME` takes everything from the stored run, but the store itself
    comes from --store, $KBENCH_STORE or kbench.toml's `store`, as for a new run."""
    import importlib.resources

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KBENCH_STORE", raising=False)
    examples = importlib.resources.files("kbench").joinpath("examples")
    (tmp_path / "kbench.toml").write_text(
        f'model = ["replay:{examples}"]\nproblems = "level1/relu"\ndevice = "cpu"\n'
        'store = "elsewhere.db"\n')
    r = CliRunner().invoke(cli.app, ["run", "--name", "t"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "elsewhere.db").exists() and not (tmp_path / "kbench.db").exists()
    r = CliRunner().invoke(cli.app, ["run", "--resume", "t"])
    assert r.exit_code == 0, r.output
    assert "no run named" not in r.output and not (tmp_path / "kbench.db").exists()


@pytest.mark.parametrize(("argv", "code"), [
    (["problems", "list", "--json"], 0),
    (["eval", "--problem", "level1/relu", "--candidate", "no_such_file.py"], 2),
])
def test_the_console_script_exits_fast_with_its_code_and_all_its_output(tmp_path: Path, argv,
                                                                         code: int) -> None:
    """``entry`` leaves without the interpreter's teardown once torch is imported: the exit
    status, everything written to stdout (flushed first) and the atexit handlers survive."""
    prog = ("import atexit, sys, torch; from kbench.cli import entry; "
            "atexit.register(lambda: print('atexit ran', file=sys.stderr)); "
            f"sys.argv = ['kbench', *{argv!r}]; entry()")
    r = subprocess.run([sys.executable, "-c", prog], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == code, r.stderr
    assert r.stderr.strip().endswith("atexit ran"), r.stderr
    if code == 0:
        assert len(json.loads(r.stdout)["problems"]) > 100  # none lost in the buffer
    else:
        assert r.stderr.count("\n") == 2 and "Traceback" not in r.stderr, r.stderr


def test_the_console_script_exits_normally_while_a_thread_pool_is_left_open(tmp_path: Path):
    """A pool left open (its workers wait on their queue) would keep a join waiting for ever:
    with other threads alive, the exit is the interpreter's own, which stops them."""
    prog = ("import concurrent.futures, sys, torch; from kbench.cli import entry; "
            "pool = concurrent.futures.ThreadPoolExecutor(2); pool.submit(int, 1).result(); "
            "sys.argv = ['kbench', 'problems', 'list', '--json']; entry()")
    r = subprocess.run([sys.executable, "-c", prog], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["problems"]) > 100
