"""kbench's cache directory on this machine, and writing a cache file whole.

``$KBENCH_CACHE_DIR`` (default ``$XDG_CACHE_HOME/kbench``, else ``~/.cache/kbench``) holds the
build cache (``builds/``), the CPU shapes and input sizes per problem file (``cpu_shapes/``,
``input_sizes/``) and a Ray node's baselines (``ray-baselines.db``). ``KBENCH_CACHE_DIR=off``
turns the caches that can do without a file off.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["OFF", "cache_base", "cache_dir", "cache_off", "write_json_atomically"]

OFF = ("0", "off", "false", "no", "none")  # values of a switch that mean "off"


def cache_off() -> bool:
    """``KBENCH_CACHE_DIR`` says off."""
    return os.environ.get("KBENCH_CACHE_DIR", "").strip().lower() in OFF


def cache_base() -> Path:
    """Where the caches live: ``$KBENCH_CACHE_DIR``, else ``~/.cache/kbench`` (also when it
    says off: for a cache that must have a file)."""
    root = os.environ.get("KBENCH_CACHE_DIR", "")
    if root and not cache_off():
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kbench"


def cache_dir() -> Path | None:
    """:func:`cache_base`, or None when ``KBENCH_CACHE_DIR`` says off."""
    return None if cache_off() else cache_base()


def write_json_atomically(path: Path, data: Any) -> None:
    """``data`` as JSON at ``path``, replaced whole (readers never see half a file); an
    unwritable cache is left alone."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
