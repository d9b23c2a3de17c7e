"""Search strategies: which calls to make next for a problem, given what happened so far.

The runner drives a strategy per problem::

    history: list[Attempt] = []
    while not strategy.done(history):
        for request in strategy.next_requests(task, history):
            ... call the provider, extract code, verify, append one Attempt per sample

A strategy is stateless between calls: everything it needs is in ``history``, so a run can
be resumed from the store. The evolve strategy extends :class:`Strategy` with a population
whose parents are chosen by :attr:`Attempt.fitness` (fast_p's view), using the helpers
:meth:`Strategy.lineages` and :meth:`Strategy.ranked` and ``Request.parents`` for lineage.

Example:
    >>> s = make_strategy("refine", turns=3)
    >>> s.max_attempts
    3
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar, TypeVar

from agents.prompt import build_messages
from agents.records import History, Request, Task
from sandbox.errors import ConfigError

__all__ = [
    "Strategy",
    "OneShot",
    "Refine",
    "register_strategy",
    "make_strategy",
    "available_strategies",
    "strategy_options",
]


class Strategy(ABC):
    """Decides the next requests for one problem from its history."""

    name: ClassVar[str] = ""

    @abstractmethod
    def next_requests(self, task: Task, history: History) -> list[Request]:
        """The calls to make now (run concurrently); empty when there is nothing to do."""

    @abstractmethod
    def done(self, history: History) -> bool:
        """True when this problem needs no more calls."""

    @property
    @abstractmethod
    def max_attempts(self) -> int:
        """An upper bound on the attempts per problem, for budget estimates."""

    def screen(self, code: str, history: History) -> str | None:
        """Why ``code`` should not be verified at all (e.g. it repeats an earlier candidate),
        or ``None``. The runner asks before verifying; ``history`` includes the earlier
        replies of the same batch. A refused candidate is stored, never verified."""
        return None

    # -- helpers for subclasses -----------------------------------------------------------
    @staticmethod
    def lineages(history: History) -> dict[int, list[int]]:
        """Attempt ids (history indices) per sample, in order."""
        out: dict[int, list[int]] = {}
        for i, a in enumerate(history):
            out.setdefault(a.sample, []).append(i)
        return out

    @staticmethod
    def ranked(history: History) -> list[int]:
        """Attempt ids, fittest first (ties: earlier first)."""
        return sorted(range(len(history)), key=lambda i: (-history[i].fitness, i))


_S = TypeVar("_S", bound=type[Strategy])
_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(cls: _S) -> _S:
    """Class decorator: make ``cls`` available to :func:`make_strategy` as ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a name")
    _REGISTRY[cls.name] = cls
    return cls


def available_strategies() -> list[str]:
    return sorted(_REGISTRY)


def _lookup(name: str) -> type[Strategy]:
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ConfigError(
            f"unknown strategy {name!r}; choose one of {', '.join(available_strategies())}"
        )
    return cls


def strategy_options(name: str) -> tuple[str, ...]:
    """The keyword options the strategy registered as ``name`` accepts, in signature order.

    The runner passes a strategy exactly the run settings it names here, so a strategy
    registered later (evolve, a plug-in) is configured without any change to the runner.

    Example:
        >>> strategy_options("refine")
        ('turns', 'samples', 'stop_when_correct')
    """
    params = inspect.signature(_lookup(name).__init__).parameters.values()
    return tuple(p.name for p in params if p.name != "self"
                 and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def make_strategy(name: str, **options: Any) -> Strategy:
    """The strategy registered as ``name``; ConfigError with one line on a bad name or option."""
    cls = _lookup(name)
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"strategy {name!r}: {e}") from None


def _positive(what: str, v: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{what} must be a positive integer, got {v!r}")
    return v


@register_strategy
class OneShot(Strategy):
    """``samples`` independent answers to the same prompt, asked for in one request."""

    name = "oneshot"

    def __init__(self, samples: int = 1):
        self.samples = _positive("samples", samples)

    @property
    def max_attempts(self) -> int:
        return self.samples

    def next_requests(self, task: Task, history: History) -> list[Request]:
        missing = self.samples - len(history)
        if missing <= 0:
            return []
        msgs = tuple(build_messages(task))
        return [Request(msgs, n=missing, sample=len(history), turn=0)]

    def done(self, history: History) -> bool:
        return len(history) >= self.samples


@register_strategy
class Refine(Strategy):
    """Up to ``turns`` turns per sample, each seeing its lineage's earlier verdicts.

    ``samples`` independent lineages start from one request. With ``stop_when_correct``, a
    lineage stops at its first correct attempt; by default it keeps going for speed.
    """

    name = "refine"

    def __init__(self, turns: int = 3, samples: int = 1, stop_when_correct: bool = False):
        self.turns = _positive("turns", turns)
        self.samples = _positive("samples", samples)
        self.stop_when_correct = bool(stop_when_correct)

    @property
    def max_attempts(self) -> int:
        return self.turns * self.samples

    def next_requests(self, task: Task, history: History) -> list[Request]:
        if not history:
            return [Request(tuple(build_messages(task)), n=self.samples, sample=0, turn=0)]
        out = []
        for sample, ids in self._open(history):
            chain = [history[i] for i in ids]
            out.append(Request(
                tuple(build_messages(task, chain)), n=1, sample=sample,
                turn=chain[-1].turn + 1, parents=(ids[-1],),
            ))
        return out

    def done(self, history: History) -> bool:
        return bool(history) and not self._open(history)

    def _open(self, history: History) -> list[tuple[int, list[int]]]:
        """Lineages that still have turns to take."""
        out = []
        for sample, ids in sorted(self.lineages(history).items()):
            if history[ids[-1]].turn + 1 >= self.turns:
                continue
            if self.stop_when_correct and any(history[i].passed for i in ids):
                continue
            out.append((sample, ids))
        return out
