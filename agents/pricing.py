"""What an LLM call cost, from its token usage and a price table.

The defaults are **list prices as of 2025**, in USD per 1M tokens, for models people commonly
run; they go stale. Override or extend them in ``kbench.toml``::

    [prices]
    "gpt-4o" = { input = 2.5, output = 10.0 }
    "my-finetune" = { input = 1.0, output = 4.0 }

An unknown paid model costs ``None`` (unknown), never a guessed 0. Replays and models served
from this machine or a private network cost 0.

Example:
    >>> cost("gpt-4o-2024-08-06", 1_000_000, 100_000)
    3.5
    >>> cost("some-new-model", 10, 10) is None
    True
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sandbox.errors import ConfigError

__all__ = ["Price", "PriceTable", "DEFAULT_PRICES", "price_table", "lookup", "cost", "is_local_url"]


@dataclass(frozen=True)
class Price:
    """USD per 1M input tokens and per 1M output tokens."""

    input: float
    output: float


PriceTable = Mapping[str, Price]

# List prices as of 2025 (USD per 1M tokens); override in kbench.toml [prices].
DEFAULT_PRICES: dict[str, Price] = {
    # OpenAI
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-5": Price(1.25, 10.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "o1": Price(15.00, 60.00),
    "o3": Price(2.00, 8.00),
    "o3-pro": Price(20.00, 80.00),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    # Anthropic
    "claude-opus-4": Price(15.00, 75.00),
    "claude-opus-4-1": Price(15.00, 75.00),
    "claude-opus-4-5": Price(5.00, 25.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-sonnet-4-5": Price(3.00, 15.00),
    "claude-haiku-4-5": Price(1.00, 5.00),
    "claude-3-7-sonnet": Price(3.00, 15.00),
    "claude-3-5-sonnet": Price(3.00, 15.00),
    "claude-3-5-haiku": Price(0.80, 4.00),
}

# A dated snapshot or alias of a listed model has the listed model's price:
# gpt-4o-2024-08-06, claude-sonnet-4-20250514, claude-3-5-haiku-latest, claude-opus-4-0.
# Nothing looser than that: "gpt-4o-audio" is not "gpt-4o".
_SNAPSHOT = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|latest|0)$")


def price_table(overrides: Mapping[str, Any] | None = None) -> dict[str, Price]:
    """The default table updated with ``overrides`` (the ``[prices]`` table of kbench.toml).

    Each override is ``{"input": usd_per_1m, "output": usd_per_1m}``, a ``Price``, or a
    two-item list. Raises :class:`ConfigError` naming the bad entry.
    """
    table = dict(DEFAULT_PRICES)
    for model, value in (overrides or {}).items():
        table[model] = _parse_price(model, value)
    return table


def _parse_price(model: str, value: Any) -> Price:
    if isinstance(value, Price):
        return value
    try:
        if isinstance(value, Mapping):
            unknown = set(value) - {"input", "output"}
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)}")
            inp, out = value["input"], value["output"]
        else:
            inp, out = value
        price = Price(float(inp), float(out))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(
            f"[prices] {model!r}: expected {{ input = USD per 1M tokens, output = USD per 1M "
            f"tokens }} ({e})"
        ) from None
    if price.input < 0 or price.output < 0:
        raise ConfigError(f"[prices] {model!r}: prices cannot be negative")
    return price


def lookup(model: str, table: PriceTable | None = None) -> Price | None:
    """The price of ``model``: an exact entry, else the entry it is a dated snapshot of.

    A provider prefix (``openai/``, ``anthropic/``) is ignored.
    """
    table = DEFAULT_PRICES if table is None else table
    name = model.split("/", 1)[1] if model.startswith(("openai/", "anthropic/")) else model
    if name in table:
        return table[name]
    base = _SNAPSHOT.sub("", name)
    return table.get(base) if base != name else None


def cost(
    model: str, input_tokens: int, output_tokens: int, table: PriceTable | None = None
) -> float | None:
    """USD for one call, or ``None`` when ``model`` has no price in ``table``."""
    price = lookup(model, table)
    if price is None:
        return None
    return (input_tokens * price.input + output_tokens * price.output) / 1e6


def is_local_url(url: str) -> bool:
    """True for servers on this machine or a private network (their calls cost nothing)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith((".localhost", ".local")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local
