"""The exception tree's root and the errors the lower layers raise.

Every kbench error derives from :class:`KbenchError`; the CLI turns any of them into one
clear line. ``kbench.errors`` re-exports these names (and adds the orchestrator's own), so
``from kbench.errors import ProblemError`` and ``from sandbox.errors import ProblemError``
name the same class.
"""

from __future__ import annotations

__all__ = ["KbenchError", "ProblemError", "ConfigError"]


class KbenchError(Exception):
    """Root of kbench's errors. The message is meant for the user, as one line."""


class ProblemError(KbenchError):
    """A problem file or problem selector is malformed or matches nothing."""


class ConfigError(KbenchError):
    """Bad flags or configuration."""
