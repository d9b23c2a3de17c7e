"""One exception tree for kbench; the CLI turns any ``KbenchError`` into one clear line.

The root and the errors the lower layers raise live in :mod:`sandbox.errors` (sandbox and
agents sit below kbench and may not import it); they are re-exported here unchanged.
"""

from __future__ import annotations

from sandbox.errors import ConfigError, KbenchError, ProblemError

__all__ = ["KbenchError", "ProblemError", "ConfigError", "StoreError"]


class StoreError(KbenchError):
    """The result store cannot be opened or written."""
