"""Which model serves the next call: UCB1 on improvement per dollar.

A run given several models (``--model A --model B``) keeps one arm per model. The unit of
play is one completion (one sample): a request for ``n`` samples is served by one model and
counts ``n`` plays of it. The rule, exactly:

* every arm is played once before any is played twice (arms never started come first, in
  the order given);
* otherwise arm ``i`` scores ``value_i + c * sqrt(2 ln S / s_i)`` where ``s_i`` counts the
  arm's plays *started* (so calls still in flight already spread concurrent choices),
  ``S = sum s_i`` and ``c`` is ``exploration`` (1.0: UCB1);
* ``value_i = rate_i / max_j rate_j`` (all 0 while nothing improved anywhere), an arm with
  no settled play yet counting 1 (optimistic), where ``rate_i = G_i / C_i``: the arm's summed
  improvement over its summed cost;
* the highest score wins; equal scores are broken by a ``random.Random(seed)``, so a seeded
  run chooses the same way every time it sees the same rewards in the same order.

Improvement (:func:`improvement`) is what a verified sample added to its problem's best:
``1`` for the problem's first correct candidate, plus the rise of the best speedup over
eager (speedups that are not measured count 0). Cost (:func:`call_cost`) is the sample's
``cost_usd``; where the price is unknown (``None``) its tokens at ``UNKNOWN_USD_PER_MTOK``
(a deliberately dear $10 per 1M tokens, in and out), so an unpriced model is not mistaken for
a free one. A floor of ``FLOOR_USD_PER_MTOK`` per token plus ``FLOOR_USD_PER_CALL`` is added
to every cost, so free models (replays, local servers) are compared by improvement per token
and a failed call of no tokens still costs something.

Example:
    >>> b = Bandit(["openai/gpt-4o", "anthropic/claude-sonnet-4-5"], seed=0)
    >>> a = b.choose()            # arm 0: nothing played yet
    >>> b.settle(a, gain=1.0, cost_usd=0.02)
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ArmStats", "Bandit", "call_cost", "improvement", "UNKNOWN_USD_PER_MTOK",
           "FLOOR_USD_PER_MTOK", "FLOOR_USD_PER_CALL"]

UNKNOWN_USD_PER_MTOK = 10.0  # a call of unknown price: its tokens at this price
FLOOR_USD_PER_MTOK = 0.001  # added to every call: free models compare by improvement/token
FLOOR_USD_PER_CALL = 1e-6  # added to every call: a failed call of no tokens costs something


def call_cost(cost_usd: float | None, tokens: int) -> float:
    """The cost the bandit charges one sample (see the module's rule)."""
    usd = cost_usd if cost_usd is not None else tokens * UNKNOWN_USD_PER_MTOK / 1e6
    return usd + tokens * FLOOR_USD_PER_MTOK / 1e6 + FLOOR_USD_PER_CALL


def improvement(best: float | None, correct: bool, passed: bool, speedup: float | None
                ) -> tuple[float, float | None, bool]:
    """``(gain, new best speedup, now correct)`` of one verified sample on a problem whose best
    so far is ``best`` (``None``: none measured) and ``correct`` (a correct candidate exists)."""
    if not passed:
        return 0.0, best, correct
    gain = 0.0 if correct else 1.0
    if speedup is not None and (best is None or speedup > best):
        gain += speedup - (best or 0.0)
        best = speedup
    return gain, best, True


@dataclass(frozen=True)
class ArmStats:
    """One arm so far: plays started and settled, summed improvement and cost."""

    name: str
    started: int = 0
    settled: int = 0
    gain: float = 0.0
    cost: float = 0.0

    @property
    def rate(self) -> float:
        """Improvement per dollar (the cost includes the floors, so it is never 0 once
        anything settled)."""
        return self.gain / self.cost if self.cost > 0 else 0.0


class Bandit:
    """UCB1 over named arms on improvement per dollar (the rule is in the module docs)."""

    def __init__(self, arms: Sequence[str], *, seed: int = 0, exploration: float = 1.0):
        if not arms:
            raise ValueError("a bandit needs at least one arm")
        if len(set(arms)) != len(arms):
            raise ValueError(f"arms must be distinct, got {list(arms)}")
        self.exploration = exploration
        self._rng = random.Random(seed)
        self._arms = [ArmStats(a) for a in arms]

    @property
    def arms(self) -> list[ArmStats]:
        return list(self._arms)

    def index(self, name: str) -> int:
        return [a.name for a in self._arms].index(name)

    def scores(self) -> list[float]:
        """Each arm's score now (``inf`` for an arm never started)."""
        arms = self._arms
        top = max(a.rate for a in arms)
        total = sum(a.started for a in arms)
        out = []
        for a in arms:
            if a.started == 0:
                out.append(math.inf)
                continue
            value = 1.0 if a.settled == 0 else (a.rate / top if top > 0 else 0.0)
            out.append(value + self.exploration * math.sqrt(2 * math.log(total) / a.started))
        return out

    def ranking(self) -> list[int]:
        """Arm indices, best first; ties broken by the seeded generator, never-started arms
        first in the order given."""
        s = self.scores()
        fresh = [i for i, a in enumerate(self._arms) if a.started == 0]
        rest = [i for i in range(len(s)) if i not in fresh]
        ties = {i: self._rng.random() for i in rest}
        return fresh + sorted(rest, key=lambda i: (-s[i], ties[i]))

    def start(self, arm: int, n: int = 1) -> None:
        """``n`` plays of ``arm`` begin (a request of ``n`` samples)."""
        a = self._arms[arm]
        self._arms[arm] = ArmStats(a.name, a.started + n, a.settled, a.gain, a.cost)

    def choose(self, n: int = 1) -> int:
        """The best arm now, its ``n`` plays started."""
        arm = self.ranking()[0]
        self.start(arm, n)
        return arm

    def settle(self, arm: int, gain: float, cost_usd: float) -> None:
        """One play of ``arm`` ended: its improvement and its cost (see :func:`call_cost`)."""
        a = self._arms[arm]
        self._arms[arm] = ArmStats(a.name, max(a.started, a.settled + 1), a.settled + 1,
                                   a.gain + max(gain, 0.0), a.cost + max(cost_usd, 0.0))
