"""Price table, cost per call, overrides, and the budget's accounting."""

from __future__ import annotations

import pytest

from agents.budget import Budget, require_price
from agents.pricing import DEFAULT_PRICES, Price, cost, is_local_url, lookup, price_table
from agents.providers import Completion, make_provider
from kbench.errors import ConfigError


@pytest.mark.parametrize(("model", "expected"), [
    ("gpt-4o", "gpt-4o"),
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("openai/gpt-4o-mini", "gpt-4o-mini"),
    ("claude-sonnet-4-20250514", "claude-sonnet-4"),
    ("claude-opus-4-5-20251101", "claude-opus-4-5"),
    ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
    ("claude-sonnet-4-0", "claude-sonnet-4"),
    ("o3-pro", "o3-pro"),
])
def test_lookup_follows_snapshots(model: str, expected: str) -> None:
    assert lookup(model) == DEFAULT_PRICES[expected]


@pytest.mark.parametrize("model", ["gpt-4o-audio-preview", "gpt-9", "claude-sonnet-9", "o3x"])
def test_unknown_models_are_unknown_not_free(model: str) -> None:
    assert lookup(model) is None and cost(model, 1000, 1000) is None


def test_cost_arithmetic() -> None:
    assert cost("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(12.5)
    assert cost("claude-opus-4", 2_000, 1_000) == pytest.approx((2_000 * 15 + 1_000 * 75) / 1e6)
    assert cost("gpt-4o", 0, 0) == 0.0


def test_overrides() -> None:
    t = price_table({"gpt-4o": {"input": 1, "output": 2}, "mine": [0.5, 0.5],
                     "x": Price(1.0, 1.0)})
    assert t["gpt-4o"] == Price(1.0, 2.0) and t["mine"] == Price(0.5, 0.5)
    assert t["gpt-4o-mini"] == DEFAULT_PRICES["gpt-4o-mini"]
    assert cost("gpt-4o-2024-11-20", 1_000_000, 0, t) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [{"input": 1}, {"input": 1, "output": 2, "cache": 3}, "cheap",
                                 {"input": -1, "output": 1}, [1]])
def test_bad_override_is_one_line(bad) -> None:
    with pytest.raises(ConfigError, match=r"\[prices\] 'm'") as e:
        price_table({"m": bad})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("url", "local"), [
    ("http://localhost:8000/v1", True), ("http://127.0.0.1:1/v1", True),
    ("http://[::1]:8000/v1", True), ("http://10.1.2.3/v1", True), ("http://gpu-box.local/v1", True),
    ("https://api.together.xyz/v1", False), ("https://8.8.8.8/v1", False),
])
def test_is_local_url(url: str, local: bool) -> None:
    assert is_local_url(url) is local


def test_budget_accounting_and_limits() -> None:
    b = Budget(max_usd=1.0, max_tokens=10_000, max_completions=10)
    b.charge([Completion("a", input_tokens=100, output_tokens=50, cost_usd=0.25),
              Completion("", error="boom", error_kind="server"),
              Completion("b", input_tokens=10, output_tokens=5, cost_usd=None)])
    s = b.spend
    assert (s.completions, s.failed, s.input_tokens, s.output_tokens, s.unpriced) == (3, 1, 110, 55, 1)
    assert s.cost_usd == pytest.approx(0.25) and b.exhausted is None
    b.charge([Completion("c", cost_usd=0.75)])
    assert b.exhausted == "spent $1.00 of the $1.00 budget"
    t = Budget(max_tokens=100)
    t.charge([Completion("x", input_tokens=90, output_tokens=10)])
    assert t.exhausted == "used 100 of 100 tokens"


def test_require_price(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000000")
    require_price(make_provider("openai/gpt-4o"))
    require_price(make_provider("anything", base_url="http://localhost:8000/v1"))
    with pytest.raises(ConfigError, match=r'\[prices\] "gpt-9"'):
        require_price(make_provider("openai/gpt-9"))
