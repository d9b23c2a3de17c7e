"""`kbench problems new` writes a problem that already passes the suite quality tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from kbench.cli import app
from kbench.errors import ConfigError
from kbench.problems import load_file


def test_scaffold_passes_the_suite_quality_tests(tmp_path):
    r = CliRunner().invoke(app, ["problems", "new", "my_op", "--suite", "level1",
                                 "--root", str(tmp_path)])
    assert r.exit_code == 0, r.output
    path = tmp_path / "level1" / "my_op.py"
    spec = load_file(path)
    assert spec.cpu_shapes and spec.meta.flops is not None
    env = {**os.environ, "KBENCH_QUALITY_PATHS": str(path)}
    q = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(Path(__file__).parent / "test_suite_quality.py"), "-k", "my_op"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert q.returncode == 0, q.stdout[-3000:]
    assert " passed" in q.stdout and "failed" not in q.stdout


def test_scaffold_refuses_to_overwrite_or_bad_names(tmp_path):
    """Each refusal is the ConfigError that says why (not any crash) and writes nothing."""
    run = CliRunner().invoke
    assert run(app, ["problems", "new", "x", "--suite", "level1", "--root", str(tmp_path)]).exit_code == 0
    path = tmp_path / "level1" / "x.py"
    path.write_text("# edited by hand\n")
    again = run(app, ["problems", "new", "x", "--suite", "level1", "--root", str(tmp_path)])
    assert isinstance(again.exception, ConfigError), again.exception
    assert "exists already" in str(again.exception) and str(path) in str(again.exception)
    assert path.read_text() == "# edited by hand\n", "the existing file was overwritten"
    bad = run(app, ["problems", "new", "Bad-Name", "--suite", "level1", "--root", str(tmp_path)])
    assert isinstance(bad.exception, ConfigError), bad.exception
    assert "'Bad-Name'" in str(bad.exception) and "snake_case" in str(bad.exception)
    suite = run(app, ["problems", "new", "y", "--suite", "level9", "--root", str(tmp_path)])
    assert isinstance(suite.exception, ConfigError) and "level9" in str(suite.exception)
    assert sorted(p.name for p in tmp_path.rglob("*.py")) == ["x.py"]
