"""Today's isolation: a fresh Python child per job (``sandbox._process``)."""

from __future__ import annotations

from pathlib import Path

from sandbox._process import Child, child_env, job_dir
from sandbox.backends._base import Backend, register_backend

__all__ = ["SubprocessBackend"]


@register_backend(enabled=True)
class SubprocessBackend(Backend):
    """A spawned ``python -m sandbox._child`` in its own process group, with an allowlisted
    environment, no network where namespaces allow, and a kill of the group on timeout."""

    name = "subprocess"

    def __init__(self, isolate_network: bool = True) -> None:
        self.isolate_network = isolate_network

    def workdir(self) -> Path:
        return job_dir()

    def env(self, work: Path, device: str) -> dict[str, str]:
        return child_env(work, device)

    def start(self, work: Path, device: str) -> Child:
        return Child(work, device, isolate_network=self.isolate_network)
