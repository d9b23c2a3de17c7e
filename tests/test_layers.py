"""The layering of ARCHITECTURE.md ("v2"), checked by import-linter.

kbench above agents above sandbox above reference_ops (an import goes down, never up), and
problems/ is data that no code imports. The contracts live in pyproject.toml
(``[tool.importlinter]``); these tests run ``lint-imports`` on the tree, and on a small tree
that breaks both contracts, so a contract that stopped biting would fail here too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # the checkout: pyproject.toml and the packages
LINT = shutil.which("lint-imports")

pytestmark = pytest.mark.skipif(
    LINT is None, reason="lint-imports not installed (pip install -e '.[dev]' adds import-linter)")


def _lint(cwd: Path, config: Path) -> subprocess.CompletedProcess[str]:
    assert LINT is not None
    return subprocess.run([LINT, "--config", str(config), "--no-cache"], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(cwd)},
                          capture_output=True, text=True, timeout=120)


def test_the_tree_keeps_every_layer_contract():
    r = _lint(ROOT, ROOT / "pyproject.toml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_the_contracts_catch_an_upward_import_and_an_imported_problem(tmp_path):
    for pkg in ("kbench", "agents", "sandbox", "reference_ops", "problems"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "sandbox" / "bad.py").write_text("import kbench\n")
    (tmp_path / "kbench" / "bad.py").write_text("def f():\n    import problems\n")
    r = _lint(tmp_path, ROOT / "pyproject.toml")
    assert r.returncode != 0, r.stdout
    assert "sandbox is not allowed to import kbench" in r.stdout, r.stdout
    assert "kbench is not allowed to import problems" in r.stdout, r.stdout
