"""Backends: how one verification's candidate runs isolated.

A :class:`Backend` gives a job its private directory, its environment and its child process;
the verifier drives the child and owns the verdict. Backends register by name with their
availability decided at registration; :func:`get_backend` fails loudly for one that is
unknown or unavailable. Today: ``forkserver`` (the default where Linux and ``os.fork`` allow:
each child forked from a warm server that imported torch and Triton once) and ``subprocess``
(a fresh interpreter per job), and ``docker`` (a container per job, through the ``docker`` SDK;
available where the SDK is installed, and asking the engine when it is chosen: no engine is
one clear ConfigError). ``KBENCH_SANDBOX_BACKEND`` (or ``kbench --sandbox``) picks one by
name.
"""

from __future__ import annotations

from sandbox.backends._base import (
    Backend,
    RunningChild,
    available_backends,
    default_backend,
    get_backend,
    prepare,
    register_backend,
    registered_backends,
)
from sandbox.backends._docker import DockerBackend
from sandbox.backends._forkserver import ForkServerBackend
from sandbox.backends._subprocess import SubprocessBackend

__all__ = ["Backend", "DockerBackend", "ForkServerBackend", "RunningChild", "SubprocessBackend",
           "available_backends", "default_backend", "get_backend", "prepare", "register_backend",
           "registered_backends"]
