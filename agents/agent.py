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
from dataclasses import dataclass, replace

from agents.budget import Budget, Reservation
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
                       verdict, self.request.parents,  # type: ignore[arg-type]
                       dict(self.request.lineage))


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
        self._returned: asyncio.Event | None = None  # set whenever a reserved call returns

    @property
    def stop_reason(self) -> str | None:
        """Why the whole run must stop (fatal provider error, budget), or ``None``."""
        return self.fatal_error or self.budget.exhausted

    def done(self, history: History) -> bool:
        return self.stop_reason is not None or self.strategy.done(history)

    async def propose(self, task: Task, history: History) -> list[Proposal]:
        """Make the strategy's next requests concurrently (the provider bounds concurrency).

        Each call reserves its worst case in the budget before it starts (see
        :meth:`Budget.reserve`); requests that do not fit wait for calls in flight to return,
        and when one does not fit with nothing in flight the budget is spent.
        """
        if self.stop_reason is not None:
            return []
        requests = self.strategy.next_requests(task, history)
        admitted = await self._admit(requests)
        results = await asyncio.gather(*[self._call(task, r, held) for r, held in admitted])
        out = []
        for (req, _), completions in zip(admitted, results, strict=True):
            for i, c in enumerate(completions):
                if c.fatal and self.fatal_error is None:
                    self.fatal_error = f"{self.provider.label}: {c.error}"
                out.append(Proposal(req, i, c, extract_code(c.text) if c.ok else None))
        return out

    async def _admit(self, requests: list[Request]) -> list[tuple[Request, Reservation]]:
        """The leading requests that fit the budget now, each with its reservation."""
        b = self.budget
        out: list[tuple[Request, Reservation]] = []
        for r in requests:
            while True:
                left = b.completions_left()
                req = r if left is None or r.n <= left or left < 1 else replace(r, n=left)
                want = b.worst_case(self.provider, req.messages, req.n, self.max_tokens)
                if b.reserve(want):
                    out.append((req, want))
                    break
                if out or b.exhausted is not None:
                    return out  # launch what fits; the rest is asked for again next time
                if b.in_flight.calls == 0:
                    b.refused = b.why_not(want) or "the budget is spent"
                    return out
                await self._wait_for_a_return()
        return out

    async def _wait_for_a_return(self) -> None:
        if self._returned is None:
            self._returned = asyncio.Event()
        await self._returned.wait()

    async def _call(self, task: Task, r: Request, held: Reservation) -> list[Completion]:
        try:
            completions = await self.provider.complete(
                list(r.messages), max_tokens=self.max_tokens, temperature=self.temperature,
                n=r.n, context=r.context(task),
            )
        except BaseException:
            self.budget.settle(held, [])
            raise
        self.budget.settle(held, completions)
        if self._returned is not None:
            self._returned.set()
            self._returned = None
        return completions
