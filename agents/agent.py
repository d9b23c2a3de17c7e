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

Given several providers (``Agent([gpt, claude], strategy)``), a :class:`~agents.bandit.Bandit`
picks the one that serves each request (UCB1 on improvement per dollar); each proposal says
which provider wrote it, and the runner credits the bandit with what its verdict improved
(:meth:`Agent.credit`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace

from agents.bandit import Bandit, call_cost
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
    provider: Provider | None = None  # the provider that wrote it (None: the only one)

    @property
    def sample(self) -> int:
        return self.request.sample + self.index

    def attempt(self, verdict: object | None = None) -> Attempt:
        """The history record of this proposal once verified (``verdict`` a Verdict)."""
        return Attempt(self.sample, self.request.turn, self.completion, self.code,
                       verdict, self.request.parents,  # type: ignore[arg-type]
                       dict(self.request.lineage))


class Agent:
    """Asks ``provider`` (or, given several, the one the bandit picks per request) for what
    ``strategy`` wants, within ``budget``."""

    def __init__(
        self,
        provider: Provider | Sequence[Provider],
        strategy: Strategy,
        *,
        max_tokens: int = 8192,
        temperature: float = 0.7,
        budget: Budget | None = None,
        seed: int = 0,
    ):
        self.providers = [provider] if isinstance(provider, Provider) else list(provider)
        if not self.providers:
            raise ValueError("an agent needs at least one provider")
        self.provider = self.providers[0]
        # one arm per provider; with one provider there is nothing to choose
        self.bandit = (Bandit([p.label for p in self.providers], seed=seed)
                       if len(self.providers) > 1 else None)
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
        results = await asyncio.gather(*[self._call(task, r, held, prov)
                                         for r, held, prov in admitted])
        out = []
        for (req, _, prov), completions in zip(admitted, results, strict=True):
            for i, c in enumerate(completions):
                if c.fatal and self.fatal_error is None:
                    self.fatal_error = f"{prov.label}: {c.error}"
                out.append(Proposal(req, i, c, extract_code(c.text) if c.ok else None, prov))
        return out

    def credit(self, provider: Provider | None, gain: float, completion: Completion) -> None:
        """One sample of ``provider`` was judged: tell the bandit what it improved (see
        :func:`agents.bandit.improvement`) and what it cost. A no-op with one provider."""
        if self.bandit is None or provider is None:
            return
        tokens = completion.input_tokens + completion.output_tokens
        self.bandit.settle(self.bandit.index(provider.label), gain,
                           call_cost(completion.cost_usd, tokens))

    def _order(self) -> list[Provider]:
        """The providers in the order the bandit prefers them now."""
        if self.bandit is None:
            return self.providers
        return [self.providers[i] for i in self.bandit.ranking()]

    async def _admit(self, requests: list[Request]
                     ) -> list[tuple[Request, Reservation, Provider]]:
        """The leading requests that fit the budget now, each with its reservation and the
        provider that serves it: the bandit's first choice, else the next one whose worst
        case fits (a dear model may not fit where a cheap one still does)."""
        b = self.budget
        out: list[tuple[Request, Reservation, Provider]] = []
        for r in requests:
            while True:
                left = b.completions_left()
                req = r if left is None or r.n <= left or left < 1 else replace(r, n=left)
                order = self._order()
                fits = None
                for prov in order:
                    want = b.worst_case(prov, req.messages, req.n, self.max_tokens)
                    if b.reserve(want):
                        fits = (req, want, prov)
                        break
                if fits is not None:
                    if self.bandit is not None:
                        self.bandit.start(self.bandit.index(fits[2].label), req.n)
                    out.append(fits)
                    break
                want = b.worst_case(order[0], req.messages, req.n, self.max_tokens)
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

    async def _call(self, task: Task, r: Request, held: Reservation,
                    provider: Provider) -> list[Completion]:
        try:
            completions = await provider.complete(
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
