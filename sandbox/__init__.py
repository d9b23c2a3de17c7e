"""The verifier: static policy, isolated child processes, correctness, timing, the verdict.

The only place candidate code is ever executed is the child process started by
:func:`verify` (module ``sandbox._child``); this process never imports candidate code.
Names are imported lazily so that the child, which imports this package, stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Cache", "Candidate", "Job", "Limits", "MemoryCache", "ShapeResult", "Status", "Timing",
           "Verdict", "default_device", "measure_baselines", "run_job", "verify"]

_WHERE = {
    "ShapeResult": "sandbox.verdict", "Status": "sandbox.verdict", "Timing": "sandbox.verdict",
    "Verdict": "sandbox.verdict", "Cache": "sandbox.verifier", "Limits": "sandbox.job",
    "Job": "sandbox.job", "Candidate": "sandbox.job", "run_job": "sandbox.job",
    "MemoryCache": "sandbox.verifier", "default_device": "sandbox.verifier",
    "verify": "sandbox.verifier", "measure_baselines": "sandbox.verifier",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
