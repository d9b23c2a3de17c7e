"""Accounting and limits: tokens, samples and dollars spent by a run.

Example:
    >>> b = Budget(max_usd=1.0)
    >>> b.charge([Completion("x", input_tokens=10, output_tokens=5, cost_usd=0.4)])
    >>> b.spend.cost_usd, b.exhausted
    (0.4, None)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agents.pricing import cost, lookup
from agents.providers import Completion, Provider
from sandbox.errors import ConfigError

__all__ = ["Spend", "Budget", "Reservation", "require_price"]


@dataclass(frozen=True)
class Spend:
    """Totals so far. ``cost_usd`` covers priced completions; ``unpriced`` counts the rest."""

    completions: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0


@dataclass(frozen=True)
class Reservation:
    """The worst case of calls in flight: completions, tokens (in + out) and USD."""

    calls: int = 0
    tokens: int = 0
    usd: float = 0.0

    def __add__(self, o: Reservation) -> Reservation:
        return Reservation(self.calls + o.calls, self.tokens + o.tokens, self.usd + o.usd)

    def __sub__(self, o: Reservation) -> Reservation:
        return Reservation(self.calls - o.calls, self.tokens - o.tokens, self.usd - o.usd)


class Budget:
    """Running totals with optional limits; ``exhausted`` says why the run must stop.

    Calls in flight count: :meth:`reserve` admits a call only if the spend so far, the worst
    case of every call still in flight and this call's own worst case (its prompt at ~3
    characters a token plus ``max_tokens`` per sample, at the model's price) all fit every
    limit; the agent reserves before a call starts and settles when it returns. A reply that
    bills more than its worst case (a server that ignores ``max_tokens``) may still overshoot.
    """

    def __init__(
        self,
        max_usd: float | None = None,
        max_tokens: int | None = None,
        max_completions: int | None = None,
    ):
        self.max_usd = max_usd
        self.max_tokens = max_tokens
        self.max_completions = max_completions
        self._spend = Spend()
        self._held = Reservation()
        self.refused: str | None = None  # set when a call could not fit with nothing in flight

    def charge(self, completions: Iterable[Completion]) -> None:
        s = self._spend
        for c in completions:
            s = Spend(
                completions=s.completions + 1,
                failed=s.failed + (0 if c.ok else 1),
                input_tokens=s.input_tokens + c.input_tokens,
                output_tokens=s.output_tokens + c.output_tokens,
                cost_usd=s.cost_usd + (c.cost_usd or 0.0),
                unpriced=s.unpriced + (1 if c.cost_usd is None and c.ok else 0),
            )
        self._spend = s

    @property
    def spend(self) -> Spend:
        return self._spend

    @property
    def exhausted(self) -> str | None:
        """Why no more calls may be made, or ``None``."""
        s = self._spend
        if self.max_usd is not None and s.cost_usd >= self.max_usd:
            return f"spent ${s.cost_usd:.2f} of the ${self.max_usd:.2f} budget"
        if self.max_tokens is not None and s.input_tokens + s.output_tokens >= self.max_tokens:
            return f"used {s.input_tokens + s.output_tokens} of {self.max_tokens} tokens"
        if self.max_completions is not None and s.completions >= self.max_completions:
            return f"made {s.completions} of {self.max_completions} completions"
        return self.refused

    # -- calls in flight ------------------------------------------------------------------
    @property
    def in_flight(self) -> Reservation:
        """The reserved worst case of the calls that have not returned yet."""
        return self._held

    def completions_left(self) -> int | None:
        """Completions that may still start (in-flight ones counted), or None: no limit."""
        if self.max_completions is None:
            return None
        return max(self.max_completions - self._spend.completions - self._held.calls, 0)

    def worst_case(self, provider: Provider, messages: Sequence[Mapping[str, Any]], n: int,
                   max_tokens: int) -> Reservation:
        """What one call of ``n`` samples may cost at most."""
        chars = sum(len(str(m.get("content", ""))) for m in messages)
        inp, out = chars // 3 + 16, max_tokens * n
        usd = 0.0 if provider.free else (cost(provider.model, inp, out, provider.prices) or 0.0)
        return Reservation(n, inp + out, usd)

    def why_not(self, want: Reservation) -> str | None:
        """Why a call of worst case ``want`` may not start now, or None."""
        s, h = self._spend, self._held
        if self.max_completions is not None and \
                s.completions + h.calls + want.calls > self.max_completions:
            return (f"made {s.completions} of {self.max_completions} completions "
                    f"({h.calls} in flight)")
        if self.max_tokens is not None and \
                s.input_tokens + s.output_tokens + h.tokens + want.tokens > self.max_tokens:
            return (f"used {s.input_tokens + s.output_tokens} of {self.max_tokens} tokens; "
                    f"{h.tokens} reserved in flight and the next call may use {want.tokens}")
        if self.max_usd is not None and s.cost_usd + h.usd + want.usd > self.max_usd:
            return (f"spent ${s.cost_usd:.2f} of the ${self.max_usd:.2f} budget; "
                    f"${h.usd:.2f} reserved in flight and the next call may cost "
                    f"${want.usd:.2f}")
        return None

    def reserve(self, want: Reservation) -> bool:
        """Hold ``want`` for a call about to start; False (nothing held) if it does not fit."""
        if self.exhausted is not None or self.why_not(want) is not None:
            return False
        self._held = self._held + want
        return True

    def settle(self, held: Reservation, completions: Iterable[Completion]) -> None:
        """A reserved call returned: release its worst case and charge what it cost."""
        self._held = self._held - held
        self.charge(completions)


def require_price(provider: Provider) -> None:
    """Raise ConfigError when a dollar budget cannot be kept because the price is unknown."""
    if provider.free or lookup(provider.model, provider.prices) is not None:
        return
    raise ConfigError(
        f"no price known for {provider.model!r}, so a dollar budget cannot be kept; add "
        f'[prices] "{provider.model}" = {{ input = ..., output = ... }} (USD per 1M tokens) to '
        "kbench.toml, or drop the dollar limit"
    )
