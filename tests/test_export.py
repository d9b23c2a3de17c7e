"""``kbench export``: a replay run on CPU exported, pip-installed into a fresh virtual
environment, and the package's own tests passing there under Triton's interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kbench.store import Store
from sandbox.verdict import Status, Verdict

REPO = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]), **extra)
    env.pop("KBENCH_STORE", None)
    return env


def _kbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kbench.cli", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("export")
    db = tmp / "k.db"
    r = _kbench("run", "--model", f"replay:{REPO / 'kbench' / 'examples'}", "--problems",
                "level1/relu,level1/softmax", "--name", "demo", "--store", str(db), cwd=tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _kbench("export", "demo", "--out", str(tmp / "pkg"), "--name", "demo_kernels",
                "--store", str(db), cwd=tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "exported 2 op(s)" in r.stdout
    return tmp, db


@pytest.mark.slow
def test_exported_package_installs_and_its_tests_pass(exported: tuple[Path, Path]) -> None:
    tmp, _ = exported
    pkg = tmp / "pkg"
    assert {"pyproject.toml", "README.md", "bench.py"} <= {p.name for p in pkg.iterdir()}
    assert "triton" in (pkg / "demo_kernels" / "_kernels" / "level1_relu.py").read_text()
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
    # Run from a folder that is not the project, so the installed copy is what is imported.
    run_dir = tmp / "elsewhere"
    run_dir.mkdir()
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("PYTHONPATH", None)
    r = subprocess.run([str(py), "-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider",
                        "--pyargs", "demo_kernels"], cwd=run_dir, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    where = subprocess.run([str(py), "-c", "import demo_kernels; print(demo_kernels.__file__)"],
                           cwd=run_dir, env=env, capture_output=True, text=True, timeout=120)
    assert str(venv) in where.stdout, where.stdout + where.stderr  # the installed copy ran
    assert "test_torch_compile_fullgraph PASSED" in r.stdout
    assert "SKIPPED" not in r.stdout
    assert r.stdout.count("test_op_matches_reference[") >= 4  # two ops, two CPU shapes each


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
