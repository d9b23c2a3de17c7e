"""Tuning a candidate's knobs with Optuna, per shape, the study in the run's own database.

A candidate declares knobs as a module-level ``TUNE`` dict of candidate values for module
globals, or as literal ``@triton.autotune`` configs, which are lifted into the search
(:func:`space`, :func:`apply`). :func:`tune` verifies every configuration it tries with the
sandboxed verifier, records failures as failed trials, prunes clearly losing configurations
on the primary shape, and stores the best re-verified configuration per shape in the store.

Example:
    >>> from kbench.tuning import space
    >>> space('BLOCK = 128\\nNUM_WARPS = 4\\nTUNE = {"BLOCK": [64, 128], "NUM_WARPS": [4, 8]}\\n')
    {'BLOCK': [64, 128], 'NUM_WARPS': [4, 8]}
"""

from kbench.tuning._space import MAX_COMBINATIONS, apply, defaults, lift_notes, space
from kbench.tuning._targets import Target, targets
from kbench.tuning._tune import (
    GPU_NEEDED,
    SAMPLERS,
    BestConfig,
    LosingPruner,
    TuneResult,
    open_storage,
    source_hash,
    tune,
)

__all__ = [
    "MAX_COMBINATIONS",
    "GPU_NEEDED",
    "SAMPLERS",
    "BestConfig",
    "LosingPruner",
    "TuneResult",
    "apply",
    "defaults",
    "lift_notes",
    "open_storage",
    "source_hash",
    "space",
    "tune",
    "Target",
    "targets",
]
