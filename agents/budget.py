"""Accounting and limits: tokens, samples and dollars spent by a run.

Example:
    >>> b = Budget(max_usd=1.0)
    >>> b.charge([Completion("x", input_tokens=10, output_tokens=5, cost_usd=0.4)])
    >>> b.spend.cost_usd, b.exhausted
    (0.4, None)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agents.pricing import lookup
from agents.providers import Completion, Provider
from sandbox.errors import ConfigError

__all__ = ["Spend", "Budget", "require_price"]


@dataclass(frozen=True)
class Spend:
    """Totals so far. ``cost_usd`` covers priced completions; ``unpriced`` counts the rest."""

    completions: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0


class Budget:
    """Running totals with optional limits; ``exhausted`` says why the run must stop.

    Limits are checked between steps, so a run may overshoot by the step that crosses one.
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
        return None


def require_price(provider: Provider) -> None:
    """Raise ConfigError when a dollar budget cannot be kept because the price is unknown."""
    if provider.free or lookup(provider.model, provider.prices) is not None:
        return
    raise ConfigError(
        f"no price known for {provider.model!r}, so a dollar budget cannot be kept; add "
        f'[prices] "{provider.model}" = {{ input = ..., output = ... }} (USD per 1M tokens) to '
        "kbench.toml, or drop the dollar limit"
    )
