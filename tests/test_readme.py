"""The README's front door: its install and test commands are the ones CI runs, verbatim, and
the install line brings what the test line needs."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def bash_lines(markdown: str) -> list[str]:
    """Every command line of the ```bash blocks, without trailing comments."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.S):
        for line in block.splitlines():
            cmd = re.sub(r"\s+#.*$", "", line).strip()
            if cmd and not cmd.startswith("#"):
                lines.append(cmd)
    return lines


def front_door() -> tuple[str, str]:
    lines = bash_lines((REPO / "README.md").read_text())
    install = next(c for c in lines if re.match(r"(python3? -m )?pip3? install .*-e ", c))
    test = next(c for c in lines if "pytest" in c)
    return install, test


def ci_lines() -> list[str]:
    return [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()]


def test_ci_runs_the_readme_install_and_test_lines_verbatim():
    install, test = front_door()
    ci = ci_lines()
    assert install in ci, f"README install line {install!r} is not a line of .ci/run"
    assert test in ci, f"README test line {test!r} is not a line of .ci/run"
    pin = next(i for i, ln in enumerate(ci) if "torch==2.13.0" in ln)
    assert pin < ci.index(install) < ci.index(test), "pin, then install, then test"


def test_the_install_line_installs_what_the_test_line_runs():
    install, test = front_door()
    target = shlex.split(install)[-1]  # ".[dev]"
    extras = re.fullmatch(r"\.(?:\[(.*)\])?", target)
    assert extras, f"install line {install!r} does not install this checkout"
    chosen = {e.strip() for e in (extras.group(1) or "").split(",") if e.strip()}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = list(project["dependencies"])
    for extra in chosen:
        deps += project["optional-dependencies"][extra]
    names = {re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0].lower() for d in deps}
    assert "pytest" in names, f"{install!r} installs no pytest, but {test!r} needs it"
    assert "pytest-timeout" in names  # pyproject's pytest options set a timeout


def test_the_readme_has_a_cpu_install_as_pytorch_writes_it():
    lines = bash_lines((REPO / "README.md").read_text())
    cpu = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
    assert cpu in lines
    install, _ = front_door()
    assert lines[lines.index(cpu) + 1] == install, "CPU torch first, then the same install line"
