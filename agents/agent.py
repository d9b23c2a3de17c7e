"""The agent the runner calls: a provider and a strategy, turned into proposals.

Example (the runner's loop for one problem)::

    agent = Agent(make_provider("openai/gpt-4o"), make_strategy("refine", turns=3))
    history: list[Attempt] = []
    while not agent.done(history):
        for p in await agent.propose(task, history):
            verdict = verify(task.problem, p.code) if p.code is not None else None
            store.save(p.request.messages, p.completion, p.code, verdict)
            history.append(p.attempt(verdict))
    if agent.fatal_error:
        raise SystemExit(agent.fatal_error)  # bad key, unknown model, no server: stop the run
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from agents.budget import Budget
from agents.extract import extract_code
from agents.providers import Completion, Provider
from agents.records import Attempt, History, Request, Task
from agents.strategies import Strategy

__all__ = ["Agent", "Proposal"]


@dataclass(frozen=True, eq=False)
class Proposal:
    """One sample of one request: the completion and the code found in it (or ``None``)."""

    request: Request
    index: int  # which of the request's ``n`` samples
    completion: Completion
    code: str | None

    @property
    def sample(self) -> int:
        return self.request.sample + self.index

    def attempt(self, verdict: object | None = None) -> Attempt:
        """The history record of this proposal once verified (``verdict`` a Verdict)."""
        return Attempt(self.sample, self.request.turn, self.completion, self.code,
                       verdict, self.request.parents)  # type: ignore[arg-type]


class Agent:
    """Asks ``provider`` for what ``strategy`` wants, within ``budget``."""

    def __init__(
        self,
        provider: Provider,
        strategy: Strategy,
        *,
        max_tokens: int = 8192,
        temperature: float = 0.7,
        budget: Budget | None = None,
    ):
        self.provider = provider
        self.strategy = strategy
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.budget = budget or Budget()
        self.fatal_error: str | None = None  # set by a call that later calls would repeat

    @property
    def stop_reason(self) -> str | None:
        """Why the whole run must stop (fatal provider error, budget), or ``None``."""
        return self.fatal_error or self.budget.exhausted

    def done(self, history: History) -> bool:
        return self.stop_reason is not None or self.strategy.done(history)

    async def propose(self, task: Task, history: History) -> list[Proposal]:
        """Make the strategy's next requests concurrently (the provider bounds concurrency)."""
        if self.stop_reason is not None:
            return []
        requests = self.strategy.next_requests(task, history)
        results = await asyncio.gather(*[
            self.provider.complete(
                list(r.messages), max_tokens=self.max_tokens, temperature=self.temperature,
                n=r.n, context=r.context(task),
            )
            for r in requests
        ])
        out = []
        for req, completions in zip(requests, results, strict=True):
            self.budget.charge(completions)
            for i, c in enumerate(completions):
                if c.fatal and self.fatal_error is None:
                    self.fatal_error = f"{self.provider.label}: {c.error}"
                out.append(Proposal(req, i, c, extract_code(c.text) if c.ok else None))
        return out
