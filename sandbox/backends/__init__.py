"""Backends: how one verification's candidate runs isolated.

A :class:`Backend` gives a job its private directory, its environment and its child process;
the verifier drives the child and owns the verdict. Backends register by name with their
availability decided at registration; :func:`get_backend` fails loudly for one that is
unknown or unavailable. Today: ``subprocess``. A Docker backend plugs in here.
"""

from __future__ import annotations

from sandbox.backends._base import (
    Backend,
    RunningChild,
    available_backends,
    default_backend,
    get_backend,
    register_backend,
    registered_backends,
)
from sandbox.backends._subprocess import SubprocessBackend

__all__ = ["Backend", "RunningChild", "SubprocessBackend", "available_backends",
           "default_backend", "get_backend", "register_backend", "registered_backends"]
