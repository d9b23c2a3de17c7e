"""``kbench export``: a replay run on CPU exported, pip-installed into a fresh virtual
environment, and the package's own tests passing there under Triton's interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kbench.store import Store
from sandbox.verdict import ShapeResult, Status, Verdict

REPO = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]), **extra)
    env.pop("KBENCH_STORE", None)
    return env


def _kbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kbench.cli", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=600)


# Item for constructor inputs that are tensors, and inputs made from a tensor's values
# (``int(counts.sum())`` cannot run on the meta device): such problems export too.
_SCALE_PROBLEM = """# Rows of x scaled by a vector given at construction.

import torch
import torch.nn as nn

ROWS = 64
COLS = 48
KBENCH = {"cpu_shapes": {"small": {"ROWS": 16, "COLS": 24}}}


class Model(nn.Module):
    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale)  # [COLS]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def get_inputs():
    counts = torch.full((4,), ROWS // 4)
    n = int(counts.sum())  # a value read from a tensor: no meta-device inputs
    return [torch.randn(n, COLS)]


def get_init_inputs():
    return [torch.rand(COLS) + 0.5]
"""

_SCALE_KERNEL = """import torch
import torch.nn as nn
import triton
import triton.language as tl

BLOCK = 256


@triton.jit
def _scale_kernel(x_ptr, s_ptr, y_ptr, n, cols, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    s = tl.load(s_ptr + offs % cols, mask=mask)
    tl.store(y_ptr + offs, x * s, mask=mask)


class ModelNew(nn.Module):
    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        y = torch.empty_like(x)
        n = x.numel()
        _scale_kernel[(triton.cdiv(n, BLOCK),)](x, self.scale, y, n, x.shape[1], BLOCK=BLOCK)
        return y
"""


# A problem judged by its own check (as kv_int8_quant's codes are): values may differ by one
# at exact .5 ties, where rounding either way is right. The check imports kbench's comparison,
# which the exported package ships as its own ``_compare``.
_ROUND_PROBLEM = """# Values rounded to integers; ties either way.

import torch
import torch.nn as nn

ROWS = 32
COLS = 64


def _check(out, ref, inputs):
    from sandbox.compare import check_output_type

    bad = check_output_type(out, ref)
    if bad:
        return bad
    x = inputs[0]
    tie = (x - torch.floor(x)) == 0.5
    off = (out - ref).abs()
    n = int(((off > 0) & ~tie).sum()) + int((off > 1).sum())
    return f"{n} values differ off a rounding tie" if n else None


KBENCH = {"cpu_shapes": {"small": {"ROWS": 8, "COLS": 40}}, "atol": 0.0, "rtol": 0.0,
          "check": _check}


class Model(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)  # half to even


def get_inputs():
    return [torch.randint(-16, 16, (ROWS, COLS)).float() / 2]  # half the values are ties


def get_init_inputs():
    return []
"""

_ROUND_KERNEL = """import torch
import torch.nn as nn
import triton
import triton.language as tl

BLOCK = 256


@triton.jit
def _round_half_up_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(y_ptr + offs, tl.floor(x + 0.5), mask=mask)


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        y = torch.empty_like(x)
        n = x.numel()
        _round_half_up_kernel[(triton.cdiv(n, BLOCK),)](x, y, n, BLOCK=BLOCK)
        return y
"""


def _add_cuda_winner(db: Path, run: str) -> None:
    """The stored record of a CUDA (load_inline) candidate verified on a GPU for level1/relu,
    added to ``run``: this machine has no GPU, so the verdict is written as a GPU run would
    have stored it (the exporter reads only the store)."""
    from kbench.problems import load

    (spec,) = load("level1/relu")
    store = Store(str(db))
    run_rec = store.get_run(run)
    assert run_rec is not None
    pid = store.upsert_problem(spec.key, spec.suite, "relu-gpu", spec.source)
    cid = store.add_candidate(pid, (REPO / "kbench/examples/level1/relu_cuda.py").read_text(),
                              "cuda", run_id=run_rec.id, origin="llm")
    fp = {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3"}
    shapes = tuple(ShapeResult(name, params, False, 3, True, speedup_eager=1.3,
                               speedup_compile=1.1) for name, params in spec.shapes.items())
    store.add_verdict(cid, Verdict(spec.key, Status.CORRECT, "correct", "cuda", "cuda", shapes,
                                   speedup_eager=1.3, speedup_compile=1.1, fingerprint=fp),
                      "gpu-fp")
    store.close()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("export")
    db = tmp / "k.db"
    replay = tmp / "replay"
    for rel in ("level1/softmax.py", "quant/w8a8_dynamic.py"):
        (replay / rel).parent.mkdir(parents=True, exist_ok=True)
        (replay / rel).write_text((REPO / "kbench" / "examples" / rel).read_text())
    (replay / "custom").mkdir()
    (replay / "custom" / "scale_rows.py").write_text(_SCALE_KERNEL)
    (replay / "custom" / "round_half.py").write_text(_ROUND_KERNEL)
    problem = tmp / "problems" / "custom" / "scale_rows.py"
    problem.parent.mkdir(parents=True)
    problem.write_text(_SCALE_PROBLEM)
    rounding = problem.parent / "round_half.py"
    rounding.write_text(_ROUND_PROBLEM)
    r = _kbench("run", "--model", f"replay:{replay}", "--problems",
                f"level1/softmax,quant/w8a8_dynamic,{problem},{rounding}", "--name", "demo",
                "--store", str(db), cwd=tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    _add_cuda_winner(db, "demo")
    r = _kbench("export", "demo", "--out", str(tmp / "pkg"), "--name", "demo_kernels",
                "--store", str(db), cwd=tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "exported 5 op(s)" in r.stdout, r.stdout
    return tmp, db


def _venv_with(tmp: Path, pkg: Path) -> Path:
    venv = tmp / "venv"
    # --system-site-packages: torch (700 MB) and triton come from the system; CI has no GPU
    # wheels to fetch. --without-pip plus the system pip with --no-build-isolation: the build
    # uses the system's setuptools, so installing needs no network either.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                        "--no-deps", "--no-build-isolation", str(pkg)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return py


_CUDA_FIRST_USE = r"""
import json, warnings
import torch
import demo_kernels
from demo_kernels import _runtime as rt

spec = demo_kernels.SPECS["level1/relu"]
out = {"registered": hasattr(torch.ops.demo_kernels, "level1_relu"),
       "backend": spec.backend, "registration": spec.registration}
try:
    rt.load_kernel(spec)
    out["build"] = None
except RuntimeError as e:
    out["build"] = str(e)
x, = rt.inputs_at(spec, list(spec.verified.values())[-1]["params"], 0, "cpu")  # a verified shape
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    y = torch.ops.demo_kernels.level1_relu(x)
    torch.ops.demo_kernels.level1_relu(x)
out["warnings"] = [str(w.message) for w in caught if "demo_kernels::" in str(w.message)]
out["matches_reference"] = bool(torch.equal(y, torch.relu(x)))
print(json.dumps(out))
"""


@pytest.mark.slow
def test_exported_package_installs_and_its_tests_pass(exported: tuple[Path, Path]) -> None:
    tmp, _ = exported
    pkg = tmp / "pkg"
    assert {"pyproject.toml", "README.md", "bench.py"} <= {p.name for p in pkg.iterdir()}
    kernels = pkg / "demo_kernels" / "_kernels"
    # Triton launch sites go through wrap_triton; a CUDA source is left as it was.
    assert "_kbench_wrap_triton(_softmax_kernel)[" in (kernels / "level1_softmax.py").read_text()
    assert (kernels / "level1_relu.py").read_text() == (
        REPO / "kbench/examples/level1/relu_cuda.py").read_text()
    readme = (pkg / "README.md").read_text()
    assert "| triton_op |" in readme and "| custom_op |" in readme
    assert "triton_op (takes `state`)" in readme  # w8a8 and scale_rows hold buffers
    py = _venv_with(tmp, pkg)
    # Run from a folder that is not the project, so the installed copy is what is imported.
    run_dir = tmp / "elsewhere"
    run_dir.mkdir()
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("PYTHONPATH", None)
    r = subprocess.run([str(py), "-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider",
                        "--pyargs", "demo_kernels"], cwd=run_dir, env=env,
                       capture_output=True, text=True, timeout=900)
    out = r.stdout
    assert r.returncode == 0, out[-4000:] + r.stderr[-2000:]
    where = subprocess.run([str(py), "-c", "import demo_kernels; print(demo_kernels.__file__)"],
                           cwd=run_dir, env=env, capture_output=True, text=True, timeout=120)
    assert str(py.parent.parent) in where.stdout, where.stdout + where.stderr  # installed copy ran
    # Kernels against the reference under the interpreter: the Triton ops, tensor init
    # inputs (scale_rows) and a model's buffers passed as the op's state (w8a8) included.
    for case in ("level1_softmax-small", "level1_softmax-odd", "quant_w8a8_dynamic-small",
                 "scale_rows-small"):
        assert f"test_op_matches_reference[{case}] PASSED" in out, out[-4000:]
    # torch.compile(fullgraph=True) over every op, traced on CPU: the three Triton ops with
    # their kernels in the graph Inductor gets, the CUDA op as one opaque node.
    for op in ("level1_softmax", "quant_w8a8_dynamic", "scale_rows", "level1_relu"):
        assert f"test_op_traces_in_torch_compile_fullgraph[{op}] PASSED" in out, out[-4000:]
    # What cannot run here is skipped with its reason, nothing else: the CUDA op (no CUDA
    # torch, no GPU) and compiling interpreted Triton kernels.
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    reasons = ("built without CUDA", "no CUDA GPU is visible", "cannot be traced")
    assert skipped and all(any(r in s for r in reasons) for s in skipped), skipped
    assert re.search(r"test_op_matches_reference\[level1_relu-\w+\] SKIPPED", out), out[-4000:]


@pytest.mark.slow
def test_cuda_op_registers_and_first_use_says_what_is_missing(
        exported: tuple[Path, Path]) -> None:
    """No GPU here (and a CPU build of torch): the CUDA op still registers, building it
    raises one line naming what is missing, and a call runs the reference, warned once."""
    import json

    tmp, _ = exported
    py = tmp / "venv" / "bin" / "python"
    if not py.exists():
        py = _venv_with(tmp, tmp / "pkg")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    run_dir = tmp / "elsewhere2"
    run_dir.mkdir(exist_ok=True)
    r = subprocess.run([str(py), "-c", _CUDA_FIRST_USE], cwd=run_dir, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["registered"] and got["backend"] == "cuda" and got["registration"] == "custom_op"
    import torch

    if torch.version.cuda is None:
        assert "built without CUDA" in got["build"], got
    elif not torch.cuda.is_available():
        assert "no CUDA GPU is visible" in got["build"], got
    assert got["build"] is None or len(got["build"].splitlines()) == 1, got
    assert len(got["warnings"]) == 1 and got["build"].split(", and ")[-1] in got["warnings"][0]
    assert got["matches_reference"], got


_BLOCK_KBENCH = """
import sys


class _Block:
    names = {"kbench", "sandbox", "agents", "reference_ops", "problems"}

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"{name.split('.')[0]} is blocked (kbench's own)")
        return None


sys.meta_path.insert(0, _Block())
"""


def test_exported_tests_judge_an_op_by_its_problems_own_check(exported: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    """round_half's kernel rounds ties up where the reference rounds them to even: the
    verifier accepted it by the problem's own check, and the package's tests judge it by that
    check too (not by atol=0), shipped in the package: its ``from sandbox.compare import``
    imports the package's copy, and neither kbench nor sandbox is importable where it runs."""
    tmp, _ = exported
    pkg = tmp / "pkg"
    ref = (pkg / "demo_kernels" / "_reference" / "round_half.py").read_text()
    assert "from demo_kernels._compare import check_output_type" in ref, ref
    assert "sandbox" not in ref and (pkg / "demo_kernels" / "_compare.py").is_file()
    assert "sandbox" not in (pkg / "demo_kernels" / "_reference" / "level1_softmax.py").read_text()
    assert not (pkg / "demo_kernels" / "_compare.py").read_text().count("import sandbox")
    # kbench's reference_ops ship as the package's _reference_ops (w8a8's reference and the
    # copied comparison import them), and nothing imports kbench's copy any more
    shipped = pkg / "demo_kernels" / "_reference_ops"
    assert {"checks.py", "kv_int8_quant.py", "w8a8_dynamic.py"} <= {
        p.name for p in shipped.iterdir()}, sorted(p.name for p in shipped.iterdir())
    for f in pkg.rglob("*.py"):
        assert not re.search(r"^\s*(from|import)\s+reference_ops\b", f.read_text(), re.M), f
    # kbench's own packages made unimportable (an installed kbench would hide a dependency)
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(_BLOCK_KBENCH)
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join([str(blocker), str(pkg)]))
    env.pop("KBENCH_STORE", None)
    probe = subprocess.run([sys.executable, "-c", "import sandbox"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    r = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-k",
                        "round_half or w8a8", "--pyargs", "demo_kernels.tests.test_ops"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "test_op_matches_reference[round_half-small] PASSED" in r.stdout, r.stdout[-4000:]
    assert "test_op_matches_reference[quant_w8a8_dynamic-small] PASSED" in r.stdout  # _reference_ops
    assert probe.returncode != 0 and "sandbox is blocked" in probe.stderr, probe.stderr


def test_launch_sites_are_rewritten_and_nothing_else() -> None:
    from kbench.export._trace import WRAP, rewrite_launches

    for path in sorted((REPO / "kbench" / "examples").rglob("*.py")):
        src = path.read_text()
        t = rewrite_launches(src)
        if "load_inline" in src:
            assert t.source is None and "extension" in (t.why or ""), path
            continue
        assert t.source is not None and t.launches >= 1, (path, t.why)
        body = t.source[:t.source.rindex("\n\n# Added by kbench export")]
        for k in t.kernels:
            body = body.replace(f"{WRAP}({k})[", f"{k}[")
        assert body == src, path  # only the launch sites changed; kernel bodies verbatim
        assert f"import wrap_triton as {WRAP}" in t.source


def test_an_eager_launch_gets_the_kernel_and_a_trace_gets_torchs_wrapper(tmp_path: Path
                                                                        ) -> None:
    """The rewritten launches: inside the op's body (wrap_triton switched off, as triton_op
    runs it eagerly) the kernel itself, no wrapper per launch (~13 µs each on this CPU);
    elsewhere, and so whenever the op is traced, torch.library.wrap_triton's."""
    from torch._library.triton import set_wrap_triton_enabled
    from torch.library import wrap_triton

    from kbench.export._trace import WRAP, rewrite_launches

    src = (REPO / "kbench" / "examples" / "level1" / "relu.py").read_text()
    import importlib.util

    path = tmp_path / "relu_rewritten.py"  # a file: @triton.jit reads its source
    path.write_text(rewrite_launches(src).source)
    spec = importlib.util.spec_from_file_location("relu_rewritten", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ns = vars(mod)
    kernel = ns["_relu_kernel"]
    assert type(ns[WRAP](kernel)) is type(wrap_triton(kernel))
    with set_wrap_triton_enabled(False):
        assert ns[WRAP](kernel) is kernel


@pytest.mark.parametrize(("source", "why"), [
    ("import triton\n@triton.jit\ndef k(x): pass\ndef f(x):\n    g = k\n    g[(1,)](x)\n",
     "the kernel k is used at line 5"),
    ("import triton\n@triton.jit\ndef k(x): pass\ndef f(x):\n    k[(int(x.sum().item()),)](x)\n",
     "calls .item() at line 5"),
    ("import triton\n@triton.jit\ndef k(x): pass\ndef f(x):\n    return x\n",
     "no launch K[grid](...)"),
    ("import triton\nimport ctypes\n@triton.jit\ndef k(x): pass\ndef f(x):\n    k[(1,)](x)\n",
     "imports ctypes at line 2"),
    ("import triton\n@triton.heuristics({'B': lambda a: 4})\n@triton.jit\ndef k(x, B): pass\n"
     "def f(x):\n    k[(1,)](x)\n", "wrapped last by @triton.heuristics"),
])
def test_untraceable_triton_candidates_are_refused_with_the_reason(source: str, why: str) -> None:
    from types import SimpleNamespace

    from kbench.export._trace import rewrite_launches
    from kbench.export._write import _registration

    assert why in (rewrite_launches(source).why or "")
    winner = SimpleNamespace(candidate=SimpleNamespace(backend="triton", source=source))
    registration, note, kernel = _registration(winner)  # type: ignore[arg-type]
    assert registration == "custom_op" and why in note and kernel == source


def test_export_refuses_bad_input_with_one_line(exported: tuple[Path, Path]) -> None:
    tmp, db = exported
    cases = [
        (["nope", "--out", str(tmp / "a"), "--name", "ok"], "no run named 'nope'"),
        (["demo", "--out", str(tmp / "pkg"), "--name", "demo_kernels"], "--force"),
        (["demo", "--out", str(tmp / "b"), "--name", "Bad-Name"], "bad package name"),
        (["demo", "--out", str(tmp / "b"), "--name", "torch"], "bad package name"),
    ]
    before = (tmp / "pkg" / "README.md").read_text()
    for args, needle in cases:
        r = _kbench("export", *args, "--store", str(db), cwd=tmp)
        assert r.returncode == 2, r.stdout + r.stderr
        assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp / "a").exists() and not (tmp / "b").exists()
    assert (tmp / "pkg" / "README.md").read_text() == before  # nothing overwritten


def test_run_without_a_correct_candidate_exports_nothing(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    store = Store(str(db))
    run_id = store.create_run("bad", model="fake")
    pid = store.upsert_problem("level1/relu", "level1", "h", "x = 1\n")
    cid = store.add_candidate(pid, "src", "triton", run_id=run_id, origin="llm")
    store.add_verdict(cid, Verdict("level1/relu", Status.INCORRECT, "wrong values", "cpu",
                                   "triton"), "fp")
    store.close()
    r = _kbench("export", "bad", "--out", str(tmp_path / "out"), "--name", "k",
                "--store", str(db), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no exportable candidate" in r.stderr and "wrong values" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "out").exists()


def test_bench_marks_speedups_against_the_stored_ones_within_the_measured_spread() -> None:
    """ok within this run's spread (the rounds' range over their median) plus the stored
    one's plus --tol; the allowance is printed beside the mark."""
    from kbench.export._pkg_bench import _timed_as, _vs

    assert _vs([1.30, 1.31, 1.32], 1.33, 0.0, 0.02).split()[-2:] == ["ok", "4%"]
    assert _vs([1.30, 1.31, 1.32], 1.40, 0.0, 0.02).split()[-2] == "DIFFERS"
    # a wider stored spread widens the allowance; so does a wider spread of the rounds
    assert _vs([1.30, 1.31, 1.32], 1.40, 0.05, 0.02).split()[-2] == "ok"
    assert _vs([1.20, 1.31, 1.42], 1.40, 0.0, 0.02).split()[-2] == "ok"
    assert _vs([1.1], None, 0.0, 0.05).split() == ["1.10x", "-"]  # nothing stored: no judging
    shape = {"timed": {"op": {"calls_per_sample": 1, "rel_iqr": 0.01},
                       "eager": {"calls_per_sample": 24, "rel_iqr": 0.02}}}
    assert _timed_as(shape, "op") == (1, 0.01) and _timed_as(shape, "eager") == (24, 0.02)
    assert _timed_as(shape, "compile") == (None, 0.0) and _timed_as({}, "op") == (None, 0.0)


def test_bench_says_which_time_moved_when_a_speedup_differs() -> None:
    """Each time against the verifier's stored median, so a DIFFERS row says whether the op
    or a baseline moved; times with no stored median are left out."""
    from kbench.export._pkg_bench import _moved

    shape = {"timed": {"op": {"median_ms": 0.1921}, "eager": {"median_ms": 2.6122}}}
    got = _moved(shape, {"op": [0.2170, 0.2173, 0.2180], "eager": [2.62, 2.6228, 2.63],
                         "compile": [0.141]})
    assert got == ("op 0.2173 ms, verifier 0.1921 (+13.1 %); "
                   "eager 2.6228 ms, verifier 2.6122 (+0.4 %)"), got
    assert _moved({}, {"op": [1.0]}) == ""


def test_export_stores_how_the_verifier_timed_each_shape() -> None:
    from kbench.export._write import _how_timed

    shape = {"timing": {"median_ms": 2.0, "iqr_ms": 0.02, "calls_per_sample": 1},
             "eager": {"median_ms": 0.01, "iqr_ms": 0.001, "calls_per_sample": 24},
             "compiled": None}
    assert _how_timed(shape) == {
        "op": {"calls_per_sample": 1, "rel_iqr": 0.01, "median_ms": 2.0},
        "eager": {"calls_per_sample": 24, "rel_iqr": 0.1, "median_ms": 0.01}}
    assert _how_timed({"timing": None}) == {}  # not timed (a CPU run): nothing stored


class _FakeCuda:
    """A log of what bench.py asks of torch.cuda, in order (no GPU here)."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def synchronize(self) -> None:
        self.log.append("sync")

    def _sleep(self, cycles: int) -> None:
        self.log.append("spin")

    class _Flush:
        def __init__(self, log: list[str]) -> None:
            self.log = log

        def zero_(self) -> None:
            self.log.append("flush")

    def Event(self, enable_timing: bool = False):  # noqa: N802 - torch.cuda's name
        log = self.log

        class Ev:
            def record(self) -> None:
                log.append("record")

            def synchronize(self) -> None:
                log.append("wait")

            def elapsed_time(self, other: object) -> float:
                return 1.0

        return Ev()


def test_bench_times_queued_calls_on_the_device_and_host_time_apart(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Device time: a spin, then a batch of calls with no synchronization between them, each
    after an L2 flush and between its own events (cold L2 and the launch cost hidden, as the
    verifier's stored times); host time: the batch's calls unsynchronized, per call."""
    import torch

    from kbench.export import _pkg_bench as bench

    fake = _FakeCuda()
    monkeypatch.setattr(torch, "cuda", fake)
    monkeypatch.setattr(bench.torch, "cuda", fake)
    ms = bench._device_ms(lambda: fake.log.append("call"), reps=2, batch=4, host_ms=0.1,
                          cycles_per_ms=1000.0, flush=_FakeCuda._Flush(fake.log))
    assert ms == 1.0  # each call's own pair of events: 1 ms
    sample = ["spin"] + ["flush", "record", "call", "record"] * 4 + ["wait"]
    assert fake.log == ["call"] * 3 + ["sync"] + sample * 2
    fake.log.clear()
    bench._host_ms(lambda: fake.log.append("call"), reps=2, batch=3)
    assert fake.log == ["sync", "call", "call", "call"] * 2 + ["sync"]


@pytest.mark.slow
def test_export_profile_runs_on_an_exported_package(exported: tuple[Path, Path]) -> None:
    """bench/export_profile.py (run on the GPU) checked here on CPU: a row of host µs per
    layer for each op verified on the device, and a cProfile of the first."""
    tmp, _ = exported
    r = subprocess.run([sys.executable, str(REPO / "bench" / "export_profile.py"),
                        str(tmp / "pkg"), "--device", "cpu", "--calls", "3"],
                       env=_env(TRITON_INTERPRET="1"), capture_output=True, text=True,
                       timeout=600, cwd=tmp)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("demo_kernels::")]
    assert any(line.startswith("demo_kernels::level1_softmax") for line in rows), r.stdout
    assert all(len(line.split()) == 6 for line in rows), rows
    assert "cProfile of 3 calls of demo_kernels::" in r.stdout


@pytest.mark.slow
def test_bench_refuses_an_unknown_op_in_one_line_before_it_needs_a_gpu(
        exported: tuple[Path, Path]) -> None:
    """``bench.py --ops`` times only the ops named; a name that is not one of the package's
    ops is one line naming the ops there are (on any machine, before the GPU check)."""
    tmp, _ = exported
    pkg = tmp / "pkg"
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(pkg), env["PYTHONPATH"]])
    r = subprocess.run([sys.executable, "bench.py", "--ops", "level1_softmax,nope"], cwd=pkg,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("--ops: no op named nope; the ops are "), r.stderr
    assert "level1_softmax" in r.stderr
    r = subprocess.run([sys.executable, "bench.py", "--ops", "level1_softmax"], cwd=pkg,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "needs a CUDA GPU" in r.stderr, r.stderr  # past the filter


def test_the_gap_benchmark_undoes_the_exports_launch_rewrite_exactly() -> None:
    """bench/export_gap.py times the exported kernel module with its launches as the
    candidate wrote them: undoing the export's ``wrap_triton`` rewrite gives back the
    shipped Triton examples' own syntax trees."""
    import ast
    import importlib.resources
    import importlib.util

    from kbench.export._trace import WRAP, rewrite_launches

    path = Path(__file__).resolve().parent.parent / "bench" / "export_gap.py"
    spec = importlib.util.spec_from_file_location("export_gap", path)
    gap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gap)
    assert gap.WRAP == WRAP
    root = importlib.resources.files("kbench").joinpath("examples")
    checked = 0
    for example in ("level1/relu.py", "level1/softmax.py", "level1/matmul.py",
                    "kvcache/kv_int8_quant.py", "attention/gqa_causal_prefill.py"):
        src = root.joinpath(example).read_text()
        traced = rewrite_launches(src)
        assert traced.source is not None and traced.launches > 0, example
        raw = gap.raw_source(traced.source)
        assert WRAP not in raw
        assert ast.dump(ast.parse(raw)) == ast.dump(ast.parse(src)), example
        checked += 1
    assert checked == 5


def test_the_gap_benchmark_runs_its_variants_and_flushes_on_cpu_tensors() -> None:
    """bench/export_gap.py's measuring part, on CPU tensors with stand-in timers: both
    flushes run (its first GPU run stopped at the read-only flush, a call torch refuses on
    any device), a variant that fails is reported in its row while the others are measured,
    and the verifier's protocol is asked for raw (with and without refill) and op."""
    import importlib.util

    import torch

    path = Path(__file__).resolve().parent.parent / "bench" / "export_gap.py"
    spec = importlib.util.spec_from_file_location("export_gap", path)
    gap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gap)

    fl = gap.flushes(4096, "cpu")
    x = torch.randn(64)
    fns = {"raw": lambda: x * 2, "op": lambda: x * 2, "broken": lambda: x @ torch.ones(3)}
    seen = []

    def device_ms(f, w, buf):
        buf.zero_()
        f()
        seen.append((w, type(buf).__name__))
        return 1.0

    def kbench_ms(f, refill):
        f()
        return 2.0 if refill is None else 3.0

    times, spans, errors = gap.measure(fns, fl, 2, device_ms, kbench_ms, [x])
    assert times[("raw", "zeroing")] == [1.0, 1.0] and times[("op", "read-only")] == [1.0, 1.0]
    assert times[("raw", "kbench")] == [2.0, 2.0] and times[("raw", "kbench+refill")] == [3.0, 3.0]
    assert times[("op", "kbench")] == [2.0, 2.0] and ("op", "kbench+refill") not in times
    assert set(errors) == {("broken", "zeroing"), ("broken", "read-only")}
    assert ("raw", "ReadFlush") in seen and ("raw", "Tensor") in seen
    assert bool((fl["zeroing"] == 0).all()) and bool((fl["read-only"].buf == 1).all())
    assert float(fl["read-only"].out) == fl["read-only"].buf.numel()
    rows = gap.report_rows(times, errors, 0.5, lambda k: "1980 MHz")
    assert any(r.startswith("broken") and "failed: RuntimeError" in r for r in rows), rows
    assert any(r.startswith("raw") and "2.000" in r and "1980 MHz" in r for r in rows), rows
    placed = gap._placed([x, 3], (2 << 20) + 256)
    assert torch.equal(placed[0], x) and placed[1] == 3
    assert placed[0].data_ptr() != x.data_ptr()
    assert gap._drawn([x, 3])[0].shape == x.shape
