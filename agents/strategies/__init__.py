"""Search strategies: which calls to make next for a problem, given what happened so far.

The base class, the registry and the simple strategies live in ``_base``; ``evolve`` (islands,
migration, fitness- and diversity-sampled parents) in ``_evolve``. Every public name is
importable from here.

Example:
    >>> from agents.strategies import make_strategy
    >>> make_strategy("evolve", islands=2, population=3, generations=4).max_attempts
    24
"""

from agents.strategies._base import _REGISTRY as _REGISTRY  # tests register probes here
from agents.strategies._base import (
    OneShot,
    Refine,
    Strategy,
    available_strategies,
    make_strategy,
    register_strategy,
    strategy_options,
)
from agents.strategies._evolve import Evolve, code_key, diversity_cell, near_key, normalise_source

__all__ = [
    "Strategy",
    "OneShot",
    "Refine",
    "Evolve",
    "register_strategy",
    "make_strategy",
    "available_strategies",
    "strategy_options",
    "normalise_source",
    "code_key",
    "near_key",
    "diversity_cell",
]
