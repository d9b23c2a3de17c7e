"""Executors decide where jobs run; registered by name, availability decided here.

Built in: ``local`` (this machine: one worker per visible GPU, else CPU) and ``ray`` (each
job a Ray task holding one GPU on a cluster; available where Ray is installed).

Example:
    >>> from kbench.executors import available_executors, make_executor
    >>> "local" in available_executors()
    True
    >>> with make_executor("local", devices=["cpu"]) as ex:
    ...     ex.submit(lambda device: 2 + 2).result()
    4
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kbench.errors import ConfigError
from kbench.executors._base import Executor, ExecutorError
from kbench.executors._local import LocalExecutor, visible_devices
from kbench.executors._ray import RayExecutor

__all__ = ["Executor", "ExecutorError", "LocalExecutor", "RayExecutor", "available_executors",
           "check_executor", "executor_names", "make_executor", "register_executor",
           "visible_devices", "why_unavailable"]


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Executor] | None
    why_not: str | None  # None: available


_REGISTRY: dict[str, _Entry] = {}


def register_executor(name: str, factory: Callable[..., Executor] | None, *,
                      why_not: str | None = None) -> None:
    """Register ``factory`` under ``name``; ``why_not`` marks it unavailable, saying why."""
    if factory is None and why_not is None:
        raise ValueError(f"executor {name!r}: an unavailable one needs why_not")
    _REGISTRY[name] = _Entry(factory, why_not)


def executor_names() -> list[str]:
    """Every registered name, available or not."""
    return sorted(_REGISTRY)


def available_executors() -> list[str]:
    """The names :func:`make_executor` can build here."""
    return sorted(n for n, e in _REGISTRY.items() if e.why_not is None)


def why_unavailable(name: str) -> str | None:
    """Why the registered ``name`` cannot be built here; None if it can."""
    return _REGISTRY[name].why_not


def check_executor(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is registered and available."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ConfigError(f"unknown executor {name!r}; choose one of "
                          f"{', '.join(executor_names())}")
    if entry.why_not is not None:
        raise ConfigError(f"executor {name!r} is not available: {entry.why_not}")


def make_executor(name: str, **options: Any) -> Executor:
    """Build the executor registered as ``name`` (a user's choice: fails loudly)."""
    check_executor(name)
    factory = _REGISTRY[name].factory
    assert factory is not None
    return factory(**options)


register_executor("local", LocalExecutor)
if importlib.util.find_spec("ray") is not None:
    register_executor("ray", RayExecutor)
else:
    register_executor("ray", None, why_not="Ray is not installed (pip install 'kbench[ray]'); "
                                           "use 'local'")
