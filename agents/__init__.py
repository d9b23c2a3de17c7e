"""LLM agents: providers (OpenAI, Anthropic, OpenAI-compatible servers, replay), prompts,
code extraction, search strategies and spend accounting.

The runner's entry points::

    from agents import Agent, Budget, Task, make_provider, make_strategy
"""

from agents.agent import Agent, Proposal
from agents.budget import Budget, Spend, require_price
from agents.extract import extract_code
from agents.pricing import DEFAULT_PRICES, Price, cost, price_table
from agents.prompt import build_messages
from agents.providers import CallContext, Completion, Provider, make_provider
from agents.records import Attempt, Request, Task
from agents.strategies import (
    OneShot,
    Refine,
    Strategy,
    available_strategies,
    make_strategy,
    register_strategy,
    strategy_options,
)

__all__ = [
    "Agent",
    "Proposal",
    "Budget",
    "Spend",
    "require_price",
    "extract_code",
    "DEFAULT_PRICES",
    "Price",
    "cost",
    "price_table",
    "build_messages",
    "CallContext",
    "Completion",
    "Provider",
    "make_provider",
    "Attempt",
    "Request",
    "Task",
    "Strategy",
    "OneShot",
    "Refine",
    "make_strategy",
    "register_strategy",
    "available_strategies",
    "strategy_options",
]
