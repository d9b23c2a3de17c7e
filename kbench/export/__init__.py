"""``kbench export``: a stored run's winning kernels as a pip-installable package of torch ops.

Per problem the winner is the run's final selection if stored, else its best verdict; only a
candidate correct on every shape it was checked on is exported (others are skipped, with the
reason). Each becomes ``torch.ops.<PKG>.<suite>_<problem>``, whose implementation runs the
candidate's ``ModelNew`` (built after the reference's seed, so the parameters match), sets the
tuned knobs of the input's verified shape, and falls back to the embedded reference, warning
once, on shapes never verified.

A Triton candidate is a ``torch.library.triton_op``: its launch sites ``K[grid](...)`` are
rewritten to go through ``torch.library.wrap_triton`` (:mod:`kbench.export._trace`), so
``torch.compile`` traces the op's body and Inductor compiles the kernels themselves; where the
reference holds parameters, the op takes the kernel model's as its last argument (real tensors
captured inside cannot enter a trace). A Triton candidate whose launches cannot all be vouched
for from its source (a kernel aliased or passed on, host reads such as ``.item()``, an
extension beside the kernels) and every CUDA candidate are a ``torch.library.custom_op`` whose
``register_fake`` runs the reference under the fake mode: one opaque node under
``torch.compile(fullgraph=True)``. The README's table says which, and why.

Example:
    >>> from kbench.export import export_run
    >>> export_run("demo", "out/demo_kernels", "demo_kernels")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.resources
import json
import keyword
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from kbench.errors import ConfigError
from kbench.export._readme import readme
from kbench.export._select import Winner, winners
from kbench.export._write import Rendered, render

__all__ = ["MARKER", "ExportResult", "Winner", "export_run", "check_package_name"]

_TAKEN = {"torch", "triton", "kbench", "sandbox", "agents", "problems", "reference_ops",
          "test", "tests", "numpy", "setuptools"}


@dataclass(frozen=True)
class ExportResult:
    path: Path
    package: str
    exported: list[str]  # problem keys
    skipped: list[str]  # "<problem>: why" lines
    warnings: list[str] = field(default_factory=list)  # exported, but its time disagrees


def check_package_name(name: str) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name) or keyword.iskeyword(name) or name in _TAKEN:
        raise ConfigError(f"bad package name {name!r}: use a lowercase Python identifier "
                          "(letters, digits, underscores) that names no existing module "
                          "such as torch or kbench")


def _template(name: str) -> str:
    return importlib.resources.files("kbench.export").joinpath(name).read_text()


def _pyproject(pkg: str, run: str) -> str:
    return f'''[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{pkg.replace("_", "-")}"
version = "0.1.0"
description = "Kernels exported by kbench from run {run}, as torch custom ops"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["torch>=2.6", "triton"]  # torch.library.triton_op, wrap_triton

[project.optional-dependencies]
test = ["pytest"]

[tool.setuptools.packages.find]
include = ["{pkg}", "{pkg}.*"]
'''


def _init(pkg: str, run: str, rendered: list[Rendered]) -> str:
    imports = "\n".join(f"from {pkg} import {r.module}" for r in rendered)
    specs = "\n".join(f"    {r.summary['problem']!r}: {r.module}.SPEC," for r in rendered)
    names = ", ".join(repr(r.module) for r in rendered)
    return (f'"""{pkg}: winning kernels of kbench run {run!r} as torch custom ops '
            f'(``torch.ops.{pkg}.<name>``).\n\nImporting the package registers the ops; kernels '
            'are compiled at their first call."""\n\n'
            f"{imports}\n\nSPECS = {{\n{specs}\n}}\n\n__all__ = ['SPECS', {names}]\n")


MARKER = ".kbench-export"
"""The file every export holds at its top: JSON naming the run, the package, the time and the
files written. ``--force`` replaces only an empty folder or one holding it."""

_GENERATED = {"__pycache__", "build", "dist", ".pytest_cache", ".eggs"}  # made by pip / pytest


def _marker(dest: Path) -> dict | None:
    """The marker of an earlier export at ``dest``, or None when it holds none."""
    try:
        data = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("kbench_export") else None


def _foreign(dest: Path, written: set[str]) -> list[str]:
    """Files under ``dest`` that the export recorded in its marker did not write (nor pip,
    setuptools or pytest, which build and test in place)."""
    out = []
    for p in sorted(dest.rglob("*")):
        rel = p.relative_to(dest)
        if any(part in _GENERATED or part.endswith(".egg-info") for part in rel.parts):
            continue
        if p.is_dir() and not p.is_symlink():
            continue
        if rel.as_posix() not in written and rel.as_posix() != MARKER:
            out.append(rel.as_posix())
    return out


def _check_dest(dest: Path, force: bool) -> None:
    """Refuses an ``--out`` that must not be replaced: anything but a folder, the current
    directory or one holding it, the home folder, a folder that is not a kbench export (or
    holds files the export did not write); an earlier export needs ``force``."""
    if not dest.exists() and not dest.is_symlink():
        return
    if dest.is_symlink():
        raise ConfigError(f"{dest} exists and is a symbolic link; choose another --out")
    if not dest.is_dir():
        raise ConfigError(f"{dest} exists and is not a folder; choose another --out")
    real, cwd, home = dest.resolve(), Path.cwd().resolve(), Path.home().resolve()
    if real == cwd or real in cwd.parents:
        raise ConfigError(f"{dest} is the current directory or holds it; kbench export never "
                          "replaces it: choose a new folder for --out")
    if real == home:
        raise ConfigError(f"{dest} is your home folder; kbench export never replaces it: "
                          "choose a new folder for --out")
    empty = not any(dest.iterdir())
    mark = None if empty else _marker(dest)
    if not empty and mark is None:
        raise ConfigError(f"{dest} exists and is not a kbench export; choose another --out "
                          "or remove it yourself")
    if not force:
        what = ("an empty folder" if mark is None
                else f"an earlier kbench export of run {mark.get('run')!r}")
        raise ConfigError(f"{dest} exists ({what}); pass --force to replace it")
    if mark is not None:
        extra = _foreign(dest, set(mark.get("files") or ()))
        if extra:
            shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
            raise ConfigError(f"{dest} holds files kbench export did not write ({shown}); "
                              "move them out or choose another --out")


def export_run(run_name: str, out: str | Path, package: str, store_url: str | None = None,
               force: bool = False) -> ExportResult:
    """Write run ``run_name``'s exportable winners as package ``package`` under ``out``.

    Nothing is written unless at least one problem exports; the package is assembled in a
    temporary folder beside ``out`` and moved into place last, so a failure leaves ``out`` as
    it was. The package holds a marker (:data:`MARKER`); ``force`` replaces only an empty
    folder or an earlier export holding no files but its own, never the current directory,
    a folder above it or the home folder.

    Raises:
        ConfigError: A bad package name, ``out`` existing without ``force`` (or not
            replaceable), an unknown run or store, no exportable candidate, or ``out`` not
            writable.
    """
    from kbench.runflow import open_run

    check_package_name(package)
    dest = Path(out).expanduser().absolute()
    _check_dest(dest, force)
    store, run = open_run(run_name, store_url)  # never creates a store
    found, skipped = winners(store, run)
    rendered: list[Rendered] = []
    for w in found:
        try:
            rendered.append(render(store, w, package, run_name))
        except ConfigError as e:
            skipped.append(f"{w.problem_key}: candidate {w.candidate.id}: {e}")
    if not rendered:
        why = "; ".join(skipped) or "it has no problems"
        raise ConfigError(f"run {run_name!r} has no exportable candidate ({why})")

    files = {
        "pyproject.toml": _pyproject(package, run_name),
        "README.md": readme(package, run_name, [r.summary for r in rendered], skipped),
        "bench.py": _template("_pkg_bench.py").replace('"__PKG__"', repr(package)),
        f"{package}/__init__.py": _init(package, run_name, rendered),
        f"{package}/_runtime.py": _template("_pkg_runtime.py"),
        f"{package}/_kernels/__init__.py": (
            '"""Candidate sources, verbatim but for a triton_op\'s launch sites '
            '``K[grid](...)``, rewritten to ``_kbench_wrap_triton(K)[grid](...)``."""\n'),
        f"{package}/_reference/__init__.py": (
            '"""Reference problems, verbatim but for an output check\'s '
            '``from sandbox.compare import``, which imports the package\'s ``_compare`` '
            '(kbench\'s comparison, copied)."""\n'),
        f"{package}/tests/__init__.py": "",
        f"{package}/tests/test_ops.py": _template("_pkg_tests.py"),
        f"{package}/tests/_trace.py": _template("_pkg_trace.py"),
    }
    for r in rendered:
        files.update(r.files)
    files[MARKER] = json.dumps({
        "kbench_export": 1, "run": run_name, "package": package,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": sorted(files)}, indent=2) + "\n"
    _write(dest, files)
    warnings = [f"{r.summary['problem']}: {r.summary['timing']}" for r in rendered
                if r.summary.get("timing_agrees") is False]
    return ExportResult(dest, package, [r.summary["problem"] for r in rendered], skipped,
                        warnings)


def _write(dest: Path, files: dict[str, str]) -> None:
    """``files`` written into a temporary folder beside ``dest``, which then takes ``dest``'s
    place; an earlier export there is moved aside first and deleted only once the new one is
    in place (put back if that fails). A folder that cannot be written is one line."""
    def fail(e: OSError) -> ConfigError:
        return ConfigError(f"cannot write the export to {dest}: {e.strerror or e}; choose "
                           "another --out")

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    except OSError as e:
        raise fail(e) from None
    old: Path | None = None
    try:
        for rel, text in files.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
            old.rmdir()
            dest.rename(old)
        try:
            tmp.rename(dest)
        except BaseException:
            if old is not None:
                old.rename(dest)
                old = None
            raise
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise fail(e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
