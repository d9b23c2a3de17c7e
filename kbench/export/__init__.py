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
import keyword
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kbench.errors import ConfigError
from kbench.export._readme import readme
from kbench.export._select import Winner, winners
from kbench.export._write import Rendered, render

__all__ = ["ExportResult", "Winner", "export_run", "check_package_name"]

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


def export_run(run_name: str, out: str | Path, package: str, store_url: str | None = None,
               force: bool = False) -> ExportResult:
    """Write run ``run_name``'s exportable winners as package ``package`` under ``out``.

    Nothing is written unless at least one problem exports; the package is assembled in a
    temporary folder beside ``out`` and moved into place last, so a failure leaves ``out`` as
    it was.

    Raises:
        ConfigError: A bad package name, ``out`` existing without ``force``, an unknown run
            or store, or no exportable candidate.
    """
    from kbench.runflow import open_run

    check_package_name(package)
    dest = Path(out).expanduser().absolute()
    if dest.exists() and not force:
        raise ConfigError(f"{dest} exists; pass --force to replace it")
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{dest} exists and is not a folder")
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

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
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
        for rel, text in files.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    warnings = [f"{r.summary['problem']}: {r.summary['timing']}" for r in rendered
                if r.summary.get("timing_agrees") is False]
    return ExportResult(dest, package, [r.summary["problem"] for r in rendered], skipped,
                        warnings)
