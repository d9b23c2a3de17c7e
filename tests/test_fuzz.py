"""Fuzzed input (issue 12): random bytes, huge and binary files, non-UTF-8, deep nesting, wrong
``ModelNew`` shapes, broken problem files and malformed ``kbench.toml`` always end in a clear
status — a verdict (exit 1) or one line (exit 2) — never an orchestrator traceback.

The cheap front half (policy, loader, config, the CLI's error paths) is fuzzed in-process with
hypothesis; a few end-to-end ``kbench eval`` subprocesses cover what only a real process shows.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import kbench.cli as cli
from kbench.config import load_config
from kbench.errors import KbenchError
from kbench.problems import load_file
from sandbox.errors import ProblemError
from sandbox.policy import PolicyResult, check_source

REPO = Path(__file__).resolve().parents[1]
HONEST = (REPO / "tests" / "candidates" / "honest" / "relu_triton_plain.py").read_text()
KERNEL = HONEST.split("class ModelNew")[0]  # imports and a valid @triton.jit kernel
RELU = (REPO / "problems" / "level1" / "relu.py").read_text()
REPLAY = f"replay:{REPO / 'kbench' / 'examples'}"
TB = "Traceback (most recent call last)"
FUZZ = settings(max_examples=30, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@contextlib.contextmanager
def _tmpdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _main(*args: str) -> tuple[int, str, str]:
    """``kbench ARGS`` in this process through the console entry point. Any exception other
    than the exit escapes and fails the test: that would be a traceback for the user."""
    o, e = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["kbench", *args]
    try:
        with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
            cli.main()
        code = 0
    except SystemExit as x:
        code = x.code if isinstance(x.code, int) else 1
    finally:
        sys.argv = argv
    return code, o.getvalue(), e.getvalue()


def _one_line(code: int, err: str) -> None:
    assert code == 2, err
    assert TB not in err and len(err.strip().splitlines()) == 1, err


def _clear_eval(code: int, out: str, err: str) -> dict:
    """An ``eval --json`` outcome is a verdict (exit 1) or one error line (exit 2)."""
    assert code in (1, 2), (code, out, err)
    assert TB not in err, err
    d = json.loads(out)
    if code == 2:
        _one_line(code, err)
        assert set(d) == {"error"}
    else:
        # the reason and log_tail may quote the candidate's own traceback (from the child);
        # stdout parsing as one JSON object means nothing else was printed there
        assert d["status"] != "correct" and d["reason"], d
    return d


def _eval_bytes(data: bytes, *extra: str) -> tuple[int, str, str]:
    with _tmpdir() as d:
        (d / "cand.py").write_bytes(data)
        return _main("eval", "-p", "level1/relu", "-c", str(d / "cand.py"), "--device", "cpu",
                     "--no-timing", "--json", "--store", str(d / "s.db"), *extra)


# -- kbench eval on hostile candidate files --------------------------------------------------
@FUZZ
@given(st.binary(max_size=4096))
def test_eval_random_bytes_is_a_verdict_or_one_line(data: bytes) -> None:
    _clear_eval(*_eval_bytes(data))


@FUZZ
@given(st.text(max_size=400))
def test_eval_random_text_is_a_verdict_or_one_line(text: str) -> None:
    _clear_eval(*_eval_bytes(text.encode("utf-8")))


def _nested_ifs(n: int) -> str:
    return "".join(" " * i + "if 1:\n" for i in range(n)) + " " * n + "pass\n"


WRONG_MODELNEW = {
    "empty": b"",
    "only_whitespace": b"\n\n   \n\t\n",
    "nul_bytes": b"import torch\x00\x00\nclass ModelNew: pass\n",
    "bom_then_latin1": b"\xef\xbb\xbfx = '\xe9'\n",
    "utf16": "class ModelNew: pass\n".encode("utf-16"),
    "parens_5000": ("x = " + "(" * 5000 + "1" + ")" * 5000 + "\n").encode(),
    "brackets_5000": ("x = " + "[" * 5000 + "]" * 5000 + "\n").encode(),
    "unary_100k": ("x = " + "-" * 100_000 + "1\n").encode(),
    "ifs_99": _nested_ifs(99).encode(),
    "ifs_150": _nested_ifs(150).encode(),
    "missing_modelnew": KERNEL.encode(),
    "modelnew_not_a_class": (KERNEL + "ModelNew = 42\n").encode(),
    "modelnew_a_function": (KERNEL + "def ModelNew(*a):\n    return None\n").encode(),
    "init_wrong_signature": (KERNEL + HONEST.split(KERNEL)[1].replace(
        "def __init__(self):", "def __init__(self, a, b, c):")).encode(),
    "forward_wrong_signature": (KERNEL + HONEST.split(KERNEL)[1].replace(
        "def forward(self, x: torch.Tensor)", "def forward(self, x, y, z)")).encode(),
    "forward_no_args": (KERNEL + HONEST.split(KERNEL)[1].replace(
        "def forward(self, x: torch.Tensor)", "def forward(self)")).encode(),
}


@pytest.mark.parametrize("name", sorted(WRONG_MODELNEW))
def test_eval_hostile_candidate_is_a_clear_status(name: str) -> None:
    d = _clear_eval(*_eval_bytes(WRONG_MODELNEW[name]))
    assert d.get("status") or d.get("error")


def test_eval_end_to_end_huge_binary_and_deep_files() -> None:
    """Real processes, run side by side: 20 MB of code, an ELF-like binary, 5000 parentheses,
    a ModelNew of the wrong signature. Text mode too: at most a few lines, no traceback."""
    cases = {
        "huge.py": KERNEL.encode() + b"# " + b"y" * (20 * 2**20) + b"\n",
        "binary.py": b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 64,
        "signature.py": WRONG_MODELNEW["init_wrong_signature"],
        "parens.py": WRONG_MODELNEW["parens_5000"],
    }
    with _tmpdir() as d:
        procs = []
        env = {k: v for k, v in os.environ.items() if k != "KBENCH_STORE"}
        for i, (fname, data) in enumerate(cases.items()):
            (d / fname).write_bytes(data)
            as_json = ["--json"] if i % 2 == 0 else []
            procs.append((fname, as_json, subprocess.Popen(
                [sys.executable, "-m", "kbench.cli", "eval", "-p", "level1/relu", "-c",
                 str(d / fname), "--device", "cpu", "--no-timing", "--store",
                 str(d / f"{fname}.db"), *as_json],
                cwd=d, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
        for fname, as_json, p in procs:
            out, err = p.communicate(timeout=300)
            if as_json:
                _clear_eval(p.returncode, out, err)
            else:
                assert p.returncode in (1, 2), (fname, out, err)
                assert TB not in out + err, (fname, out, err)
                assert len((out + err).strip().splitlines()) <= 12, (fname, out, err)


# -- the problem loader ------------------------------------------------------------------------
def _load_outcome(path: Path) -> None:
    """load_file raises ProblemError (one line) or returns a spec; nothing else escapes."""
    try:
        load_file(path)
    except ProblemError as e:
        assert "\n" not in str(e).strip(), str(e)


@FUZZ
@given(st.binary(max_size=2048))
def test_loader_on_random_bytes_raises_only_problem_error(data: bytes) -> None:
    with _tmpdir() as d:
        (d / "p.py").write_bytes(data)
        _load_outcome(d / "p.py")


@FUZZ
@given(st.text(max_size=300))
def test_loader_on_random_text_raises_only_problem_error(text: str) -> None:
    with _tmpdir() as d:
        (d / "p.py").write_text(text, encoding="utf-8")
        _load_outcome(d / "p.py")


BODY = RELU.split("def get_inputs")[0]
BROKEN_PROBLEMS = {
    "not_utf8": b"import torch\n# caf\xe9\n",
    "model_raises_at_import": b"raise RuntimeError('boom')\n",
    "system_exit_at_import": b"raise SystemExit(3)\n",
    "model_init_raises": (RELU.replace("def forward", "def __init__(self):\n"
                          "        raise RuntimeError('init boom')\n\n    def forward")).encode(),
    "missing_get_inputs": (BODY + "def get_init_inputs():\n    return []\n").encode(),
    "get_inputs_returns_int": (RELU + "\ndef get_inputs():\n    return 3\n").encode(),
    "get_inputs_returns_none": (RELU + "\ndef get_inputs():\n    return None\n").encode(),
    "get_inputs_returns_strs": (RELU + "\ndef get_inputs():\n    return ['a', 'b']\n").encode(),
    "kbench_a_list": (RELU + "\nKBENCH = [1, 2]\n").encode(),
    "kbench_atol_str": (RELU + "\nKBENCH = {'atol': 'tight'}\n").encode(),
    "kbench_shapes_int": (RELU + "\nKBENCH = {'shapes': 3}\n").encode(),
    "kbench_unknown_key": (RELU + "\nKBENCH = {'speed': 'fast'}\n").encode(),
    "kbench_dtype_int": (RELU + "\nKBENCH = {'dtype': 16}\n").encode(),
    "kbench_cpu_shape_str": (RELU + "\nKBENCH = {'cpu_shapes': {'s': {'batch_size': 'x'}}}\n"
                             ).encode(),
    "model_not_module": b"class Model: pass\ndef get_inputs(): return []\n"
                        b"def get_init_inputs(): return []\n",
}


@pytest.mark.parametrize("name", sorted(BROKEN_PROBLEMS))
def test_broken_problem_file_is_one_line_or_a_verdict(name: str) -> None:
    with _tmpdir() as d:
        p = d / f"{name}.py"
        p.write_bytes(BROKEN_PROBLEMS[name])
        _load_outcome(p)
        code, out, err = _main("problems", "show", str(p))
        assert code in (0, 2) and TB not in out + err, (code, out, err)
        if code == 2:
            _one_line(code, err)


@pytest.mark.parametrize("name", ["get_inputs_returns_int", "model_init_raises",
                                  "kbench_cpu_shape_str", "not_utf8"])
def test_eval_against_a_broken_problem_is_a_clear_status(name: str) -> None:
    with _tmpdir() as d:
        p = d / f"{name}.py"
        p.write_bytes(BROKEN_PROBLEMS[name])
        (d / "c.py").write_text(HONEST)
        _clear_eval(*_main("eval", "-p", str(p), "-c", str(d / "c.py"), "--device", "cpu",
                           "--no-timing", "--json", "--store", str(d / "s.db")))


# -- kbench.toml ---------------------------------------------------------------------------------
KEYS = ["model", "problems", "strategy", "samples", "turns", "backend", "device", "max_calls",
        "max_cost_usd", "time_limit_s", "concurrency", "temperature", "store", "timing",
        "executor", "jobs_per_device", "tune", "allow_libraries", "nonsense", "Samples"]
SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1), st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.just("x" * 100_000), st.just(10**18))
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=3)
                      | st.dictionaries(st.sampled_from(KEYS), c, max_size=3), max_leaves=6)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(value), repr(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return str(value)


TOML_TEXT = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.dictionaries(st.sampled_from(KEYS), VALUES, min_size=1, max_size=4).map(
        lambda d: "".join(f"{k} = {_toml(v)}\n" for k, v in d.items())),
)


def _is_valid(path: Path) -> bool:
    try:
        load_config(path, {"model": [REPLAY], "problems": "level1/relu", "device": "cpu"})
    except (KbenchError, UnicodeDecodeError):
        return False
    return True


def _run_with_config(data: bytes, fuzzed: bool = True) -> None:
    with _tmpdir() as d, _cwd(d):
        (d / "kbench.toml").write_bytes(data)
        valid = _is_valid(d / "kbench.toml")
        if fuzzed:
            assume(not valid)  # a valid file would start a real run
        assert not valid
        code, out, err = _main("run", "--model", REPLAY, "--problems", "level1/relu",
                               "--device", "cpu")
        _one_line(code, err)
        assert TB not in out
        assert sorted(p.name for p in d.iterdir()) == ["kbench.toml"], "something was stored"


@FUZZ
@given(TOML_TEXT)
def test_malformed_config_is_one_line_and_stores_nothing(text: str) -> None:
    _run_with_config(text.encode("utf-8"))


@settings(max_examples=25, deadline=None, database=None)
@given(st.binary(min_size=1, max_size=200))
def test_config_bytes_are_one_line_and_store_nothing(data: bytes) -> None:
    _run_with_config(b"\xff" + data)  # never UTF-8


@pytest.mark.parametrize("text", [
    "samples = 1e400\n", "samples = -1\n", "samples = 'many'\n", "turns = [[1]]\n",
    "[samples]\nx = 1\n", "timing = 'yes please'\n", "concurrency = 0\n", "store = 3\n",
    "allow_libraries = ['a', ['b']]\n", "strategy = '" + "s" * 1_000_000 + "'\n",
    "[[samples]]\n", "temperature = nan\n", "max_cost_usd = -inf\n", "a.b.c.d = 1\n",
])
def test_config_wrong_types_and_huge_values(text: str) -> None:
    _run_with_config(text.encode(), fuzzed=False)


# -- the static policy ---------------------------------------------------------------------------
def _check(source: str) -> None:
    r = check_source(source)
    assert isinstance(r, PolicyResult)


@settings(max_examples=60, deadline=None, database=None)
@given(st.text(max_size=500))
def test_policy_never_raises_on_text(source: str) -> None:
    _check(source)


@settings(max_examples=40, deadline=None, database=None)
@given(st.lists(st.sampled_from([
    KERNEL, "import os\n", "class ModelNew(nn.Module):\n", "    def forward(self, x):\n",
    "        return torch.relu(x)\n", "(", ")", "[", "]", "lambda: ", "x = ", "\n", "    ",
    "@triton.jit\n", "def f(a):\n", "getattr(torch, 'relu')", "__import__('os')", "exec('')",
    "\x00", "yield ", "async ", "await ", "global x\n", "del x\n", "*", "**", ":=", "\\\n",
]), max_size=30).map("".join))
def test_policy_never_raises_on_python_fragments(source: str) -> None:
    _check(source)


NAMES = st.sampled_from(["x", "torch", "tl", "triton", "os", "getattr", "ModelNew", "self",
                         "exec", "__builtins__", "globals", "torch.relu"])
EXPRS = st.recursive(
    st.one_of(NAMES.map(lambda n: ast.parse(n, mode="eval").body),
              st.integers(-3, 3).map(lambda i: ast.Constant(i)),
              st.text(max_size=5).map(lambda s: ast.Constant(s))),
    lambda c: st.one_of(
        st.tuples(c, st.lists(c, max_size=3)).map(lambda t: ast.Call(t[0], t[1], [])),
        st.tuples(c, NAMES).map(lambda t: ast.Attribute(t[0], t[1].split(".")[-1], ast.Load())),
        st.tuples(c, c).map(lambda t: ast.Subscript(t[0], t[1], ast.Load())),
        st.tuples(c, c).map(lambda t: ast.BinOp(t[0], ast.Add(), t[1])),
        st.lists(c, max_size=3).map(lambda xs: ast.List(xs, ast.Load())),
        c.map(lambda e: ast.Lambda(ast.arguments([], [], None, [], [], None, []), e)),
    ), max_leaves=12)
STMTS = st.recursive(
    st.one_of(EXPRS.map(ast.Expr),
              st.tuples(NAMES, EXPRS).map(lambda t: ast.Assign(
                  [ast.Name(t[0].split(".")[0], ast.Store())], t[1])),
              NAMES.map(lambda n: ast.Import([ast.alias(n)]))),
    lambda c: st.one_of(
        st.tuples(NAMES, st.lists(c, min_size=1, max_size=3), st.booleans()).map(
            lambda t: ast.FunctionDef(t[0].split(".")[0], ast.arguments(
                [], [ast.arg("self"), ast.arg("x")], None, [], [], None, []), t[1],
                [ast.parse("triton.jit", mode="eval").body] if t[2] else [], None)),
        st.tuples(NAMES, st.lists(c, min_size=1, max_size=3)).map(lambda t: ast.ClassDef(
            t[0].split(".")[0], [ast.parse("nn.Module", mode="eval").body], [], t[1], [])),
        st.tuples(EXPRS, st.lists(c, min_size=1, max_size=3)).map(
            lambda t: ast.If(t[0], t[1], [])),
    ), max_leaves=10)


@settings(max_examples=50, deadline=None, database=None)
@given(st.lists(STMTS, max_size=6))
def test_policy_never_raises_on_random_programs(body: list[ast.stmt]) -> None:
    module = ast.fix_missing_locations(ast.Module(body, []))
    _check(KERNEL + "\n" + ast.unparse(module) + "\n")


@pytest.mark.parametrize("source", [
    "x = " + "(" * 5000 + "1" + ")" * 5000, "x = " + "[" * 5000 + "]" * 5000,
    "x = " + "-" * 100_000 + "1", "x = " + "+".join(["1"] * 50_000), _nested_ifs(99),
    "x = " + "lambda: " * 3000 + "1", "f" + "(x)" * 20_000, "x" + ".a" * 50_000,
    "\x00", "\ufeff" * 10, KERNEL + "\n" + "# " + "z" * 5_000_000,
])
def test_policy_never_raises_on_deep_or_huge_sources(source: str) -> None:
    _check(source)
