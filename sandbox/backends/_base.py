"""The Backend base class and its registry."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from sandbox.errors import ConfigError

__all__ = ["Backend", "RunningChild", "available_backends", "default_backend", "get_backend",
           "register_backend", "registered_backends"]


class RunningChild(Protocol):
    """One running verification child, as the verifier drives it (``sandbox._child``'s
    protocol: signed messages in, plain lines out). A context manager that kills on exit."""

    def __enter__(self) -> RunningChild: ...

    def __exit__(self, *exc: object) -> None: ...

    def send(self, line: str) -> None: ...

    def recv(self, deadline: float) -> dict[str, Any] | None: ...

    # an Exit (code, signal, timed_out, log); a child whose recv timed out gets no grace
    def finish(self, grace_s: float = 5.0) -> Any: ...

    def kill(self) -> None: ...

    def log_tail(self, limit: int = 3000) -> str: ...


class Backend(ABC):
    """How one job's candidate runs isolated: where its private directory is, what
    environment it sees, and how its child process is started. The verifier owns everything
    else (seeds, inputs, references, the verdict)."""

    name: ClassVar[str] = ""

    @abstractmethod
    def workdir(self) -> Path:
        """A fresh private directory for one job (the caller removes it)."""

    @abstractmethod
    def env(self, work: Path, device: str) -> dict[str, str]:
        """The environment the child runs with: no secrets, caches inside ``work``."""

    @abstractmethod
    def start(self, work: Path, device: str) -> RunningChild:
        """Start the child for the job prepared in ``work`` (``job.json``, ``candidate.py``)."""

    def prepare(self, device: str) -> None:  # noqa: B027 - most backends have nothing to start
        """Begin, without waiting, whatever makes the first ``start`` for ``device`` jobs
        fast (a warm server's imports run while the caller does its own work). Optional and
        idempotent; a backend with nothing to start ahead does nothing."""


@dataclass(frozen=True)
class _Entry:
    cls: type[Backend]
    enabled: bool
    why: str


_REGISTRY: dict[str, _Entry] = {}
_B = TypeVar("_B", bound=type[Backend])


def register_backend(*, enabled: bool = True, why: str = ""):  # noqa: ANN201 - a decorator
    """Class decorator: register ``cls`` as ``cls.name``. Availability is decided here, once
    (``enabled=shutil.which("docker") is not None``), with ``why`` saying what is missing."""

    def deco(cls: _B) -> _B:
        if not cls.name:
            raise ValueError(f"{cls.__name__} needs a name")
        _REGISTRY[cls.name] = _Entry(cls, enabled, why)
        return cls

    return deco


def registered_backends() -> list[str]:
    return sorted(_REGISTRY)


def available_backends() -> list[str]:
    return sorted(n for n, e in _REGISTRY.items() if e.enabled)


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``; a backend asked for by name fails loudly
    (ConfigError) when unknown or unavailable here."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ConfigError(f"unknown sandbox backend {name!r}; choose one of "
                          f"{', '.join(registered_backends())}")
    if not entry.enabled:
        raise ConfigError(f"sandbox backend {name!r} is not available here"
                          + (f": {entry.why}" if entry.why else ""))
    return entry.cls()


ENV_VAR = "KBENCH_SANDBOX_BACKEND"
_PREFERRED = ("forkserver", "subprocess")  # the first one available here is the default


def default_backend() -> Backend:
    """The backend named by ``$KBENCH_SANDBOX_BACKEND`` (ConfigError when unknown or
    unavailable: a backend asked for by name fails loudly), else the first of
    ``forkserver``, ``subprocess`` available here (a quiet fall-back)."""
    name = os.environ.get(ENV_VAR, "").strip()
    if name:
        return get_backend(name)
    for name in _PREFERRED:
        entry = _REGISTRY.get(name)
        if entry is not None and entry.enabled:
            return entry.cls()
    return get_backend("subprocess")


def prepare(device: str) -> None:
    """Let the default backend start ahead for ``device`` jobs (:meth:`Backend.prepare`);
    best effort: a backend that cannot be had is reported by the first verification."""
    try:
        backend = default_backend()
    except ConfigError:
        return
    backend.prepare(device)
