"""Finding problems: suites, selectors and the packaged problem files.

Selectors accepted by :func:`load`: a file path, a directory path, a suite name (``level1``),
a problem id (``level1/relu``), a glob over ids (``attention/*gqa*``), ``all``, or several of
these separated by commas. Loading one file, shapes, inputs and rooflines are the problem
runtime's (:mod:`sandbox.problem`); its public names are re-exported here.
"""

from __future__ import annotations

import fnmatch
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from sandbox.errors import ProblemError
from sandbox.problem import (
    CPU_BYTES_BUDGET,
    CPU_FLOPS_BUDGET,
    DEFAULT_TOLERANCES,
    PerturbMeta,
    ProblemMeta,
    ProblemSpec,
    Shape,
    derive_shapes,
    load_file,
)

__all__ = [
    "SUITES",
    "DEFAULT_TOLERANCES",
    "LoadFailure",
    "PerturbMeta",
    "ProblemMeta",
    "Shape",
    "ProblemSpec",
    "load",
    "load_report",
    "load_file",
    "derive_shapes",
    "CPU_FLOPS_BUDGET",
    "CPU_BYTES_BUDGET",
]

SUITES = ("level1", "level2", "level3", "attention", "quant", "kvcache")


def _packaged_root() -> Path:
    return Path(str(importlib.resources.files("problems")))


def _problem_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def _all_packaged() -> list[tuple[str, Path]]:
    root = _packaged_root()
    out = []
    for suite in SUITES:
        for p in _problem_files(root / suite):
            out.append((f"{suite}/{p.stem}", p))
    return out


def _resolve_one(sel: str) -> list[tuple[str | None, Path]]:
    path = Path(sel).expanduser()
    if path.is_file():
        return [(None, path)]
    if path.is_dir():
        files = _problem_files(path)
        if not files:
            raise ProblemError(f"{path}: directory holds no problem files (*.py)")
        return [(None, p) for p in files]
    packaged = _all_packaged()
    if sel == "all":
        return list(packaged)
    if sel in SUITES:
        return [(k, p) for k, p in packaged if k.startswith(sel + "/")]
    pattern = sel[:-3] if sel.endswith(".py") else sel
    if any(c in pattern for c in "*?["):
        return [(k, p) for k, p in packaged if fnmatch.fnmatch(k, pattern)]
    return [(k, p) for k, p in packaged if k == pattern]


def _looks_like_path(sel: str) -> bool:
    """A selector that names a file or folder rather than packaged ids: absolute, relative to
    ``.`` or ``~``, or a ``.py`` file that is no packaged id (``level1/relu.py`` is one)."""
    if sel.startswith(("/", "./", "../", "~")) or sel in (".", ".."):
        return True
    return sel.endswith(".py") and not any(c in sel for c in "*?[")


def load(selector: str) -> list[ProblemSpec]:
    """Load every problem named by ``selector`` (see the module docstring); the first file
    that fails to load raises :class:`ProblemError` naming it."""
    specs, failures = load_report(selector)
    if failures:
        f = failures[0]
        raise ProblemError(f"{f.path}: {f.error}")
    return specs


# -- Loading with a report: one bad file does not hide the others ----------------------
@dataclass(frozen=True)
class LoadFailure:
    """A problem file that could not be loaded, and why (one line, without the path)."""

    path: Path
    key: str | None
    error: str

    @property
    def id(self) -> str:
        return self.key or self.path.stem

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "path": str(self.path), "error": self.error}


def load_report(selector: str) -> tuple[list[ProblemSpec], list[LoadFailure]]:
    """Like :func:`load`, but a file that fails to load is reported, not raised.

    Returns the problems that loaded and one :class:`LoadFailure` per file that did not
    (bad Python, missing ``Model``, a malformed ``KBENCH``, bytes that are not UTF-8, ...).
    A selector that matches nothing is still a :class:`ProblemError`.

    Example:
        >>> specs, failures = load_report("level1/relu")
        >>> [s.key for s in specs], failures
        (['level1/relu'], [])
    """
    parts = [s.strip() for s in selector.split(",") if s.strip()]
    if not parts:
        raise ProblemError("empty problem selector; try a suite (level1), an id (level1/relu) or a path")
    specs: dict[Path, ProblemSpec] = {}
    failures: dict[Path, LoadFailure] = {}
    for part in parts:
        found = _resolve_one(part)
        if not found and _looks_like_path(part):
            raise ProblemError(f"{part}: no such file or directory; pass an existing problem "
                               "file or folder, or an id such as level1/relu")
        if not found:
            raise ProblemError(
                f"no problem matches {part!r}; suites are {', '.join(SUITES)} "
                "(see `kbench problems list`), or pass a file or directory path"
            )
        for key, p in found:
            rp = p.resolve()
            if rp in specs or rp in failures:
                continue
            try:
                specs[rp] = load_file(p, key=key, suite=key.split("/")[0] if key else None)
            except ProblemError as e:
                msg = str(e)
                failures[rp] = LoadFailure(p, key, msg.removeprefix(f"{p}: "))
            except UnicodeDecodeError as e:
                failures[rp] = LoadFailure(
                    p, key, f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})")
            except Exception as e:  # noqa: BLE001 - the reason is kept and shown per file
                failures[rp] = LoadFailure(p, key, f"{type(e).__name__}: {e}")
    return list(specs.values()), list(failures.values())
