"""One exception tree for kbench; the CLI turns any ``KbenchError`` into one clear line."""

from __future__ import annotations

__all__ = ["KbenchError", "ProblemError", "ConfigError", "StoreError"]


class KbenchError(Exception):
    """Root of kbench's errors. The message is meant for the user, as one line."""


class ProblemError(KbenchError):
    """A problem file or problem selector is malformed or matches nothing."""


class ConfigError(KbenchError):
    """Bad flags or configuration."""


class StoreError(KbenchError):
    """The result store cannot be opened or written."""
