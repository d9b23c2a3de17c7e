"""The contract every registered Strategy passes, driven the way the runner drives it: a
scripted in-process provider (:class:`tests.fakes.provider.ScriptedProvider`) behind an
:class:`agents.Agent`, and a fake verifier that decides by a tag in the code.

The suite is parametrized over :func:`available_strategies`, so a strategy registered later
(evolve, a plug-in) is covered without edits; one the generic fake cannot build (an option
without a default) is skipped with the reason. Each strategy runs twice: with its defaults and
with ``samples``/``turns`` set to 2 where it takes them.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agents import Agent, Attempt, Budget, Task, make_strategy
from agents.providers import CallContext, Completion
from agents.records import Request
from agents.strategies import Strategy, available_strategies, strategy_options
from kbench.errors import ConfigError
from kbench.problems import load_file
from sandbox.verdict import Status, Verdict
from tests.fakes.provider import ScriptedProvider

RELU = Path(__file__).resolve().parents[2] / "problems" / "level1" / "relu.py"
PROVIDER_ERROR = "upstream exploded: marker-7f3a"


@pytest.fixture(scope="module")
def task() -> Task:
    return Task(load_file(RELU, key="level1/relu", suite="level1"), example="# example")


def _variants() -> list[Any]:
    out = []
    for name in available_strategies():
        out.append(pytest.param((name, {}), id=f"{name}-defaults"))
        small = {k: 2 for k in ("samples", "turns") if k in strategy_options(name)}
        if small:
            out.append(pytest.param((name, small), id=f"{name}-" + "-".join(
                f"{k}{v}" for k, v in small.items())))
    return out


@dataclass
class Setup:
    name: str
    options: dict[str, Any]

    def build(self) -> Strategy:
        return make_strategy(self.name, **self.options)


@pytest.fixture(params=_variants())
def setup(request: pytest.FixtureRequest) -> Setup:
    name, options = request.param
    try:
        make_strategy(name, **options)
    except ConfigError as e:
        pytest.skip(f"strategy {name!r} cannot be built by the generic fake with {options}: {e}")
    return Setup(name, dict(options))


# -- the fake model and verifier ------------------------------------------------------------
def answer(mode: str) -> Callable[[int, int, CallContext | None], Completion]:
    """``pass``/``fail``: code the verifier accepts/refuses; ``mixed``: alternate;
    ``error``: a non-fatal provider failure; ``fatal``: a rejected key; ``nocode``: prose."""

    def reply(call: int, i: int, ctx: CallContext | None) -> Completion:
        if mode == "error":
            return Completion("", finish_reason="error", error=PROVIDER_ERROR, error_kind="server")
        if mode == "fatal":
            return Completion("", finish_reason="error", error="key rejected", error_kind="auth")
        if mode == "nocode":
            return Completion("I cannot help with that.", input_tokens=10, output_tokens=5)
        ok = mode == "pass" or (mode == "mixed" and (call + i) % 2 == 0)
        tag = f"{'PASS' if ok else 'FAIL'} call{call} choice{i}"
        return Completion(f"```python\nimport torch\n\nclass ModelNew(torch.nn.Module):\n"
                          f"    pass  # {tag}\n```\n", input_tokens=100, output_tokens=50,
                          finish_reason="stop", raw_model="scripted-model", cost_usd=0.0)

    return reply


def judge(code: str) -> Verdict:
    ok = "PASS" in code
    speed = 1.0 + (sum(map(ord, code)) % 7) / 10 if ok else None  # some spread for fitness
    return Verdict("level1/relu", Status.CORRECT if ok else Status.INCORRECT,
                   "" if ok else "wrong values at 3 of 4096 elements", "cpu", "triton",
                   speedup_eager=speed, timing_available=speed is not None)


@dataclass
class Drive:
    """What happened when the runner's loop drove one strategy."""

    history: list[Attempt] = field(default_factory=list)
    rounds: list[tuple[list[Request], int]] = field(default_factory=list)  # (requests, len(history))
    provider: ScriptedProvider | None = None
    agent: Agent | None = None
    stuck: bool = False  # not done, yet nothing asked


def drive(strategy: Strategy, task: Task, mode: str, budget: Budget | None = None) -> Drive:
    """The runner's loop (kbench.runner) in miniature, with a guard against a runaway."""
    provider = ScriptedProvider(answer(mode))
    agent = Agent(provider, strategy, budget=budget)
    d = Drive(provider=provider, agent=agent)
    asked: list[Request] = []
    orig = strategy.next_requests

    def spy(t: Task, h: Any) -> list[Request]:
        rs = orig(t, h)
        asked.extend(rs)
        d.rounds.append((list(rs), len(h)))
        return rs

    strategy.next_requests = spy  # type: ignore[method-assign]

    async def loop() -> None:
        for _ in range(strategy.max_attempts + 2):
            if agent.done(d.history):
                return
            proposals = await agent.propose(task, d.history)
            if not proposals:
                d.stuck = not agent.done(d.history)
                return
            for p in proposals:
                d.history.append(p.attempt(judge(p.code) if p.code else None))
        raise AssertionError(f"not done after {strategy.max_attempts + 2} rounds")

    try:
        asyncio.run(loop())
    finally:
        del strategy.next_requests
    return d


# -- the contract ---------------------------------------------------------------------------
class TestStrategyContract:
    def test_is_registered_under_its_name(self, setup: Setup) -> None:
        s = setup.build()
        assert isinstance(s, Strategy) and type(s).name == setup.name
        assert isinstance(s.max_attempts, int) and s.max_attempts >= 1

    @pytest.mark.parametrize("mode", ["fail", "pass", "mixed", "nocode", "error"])
    def test_stays_within_its_attempt_budget_and_finishes(self, setup: Setup, task: Task,
                                                          mode: str) -> None:
        """Whatever the model and verifier do, the loop ends with ``done`` true, at most
        ``max_attempts`` completions asked for, and every one of them an attempt."""
        s = setup.build()
        d = drive(s, task, mode)
        assert not d.stuck, "next_requests was empty while done() was false: the runner stops"
        assert s.done(d.history)
        assert d.provider is not None
        assert 1 <= d.provider.asked <= s.max_attempts
        assert len(d.history) == d.provider.asked
        assert s.next_requests(task, d.history) == []  # done: nothing more to ask

    @pytest.mark.parametrize("mode", ["fail", "mixed"])
    def test_never_asks_once_done(self, setup: Setup, task: Task, mode: str) -> None:
        """At every prefix of a finished history: done means no requests, not done means
        some (an empty answer while not done would silently end the runner's loop)."""
        s = setup.build()
        d = drive(s, task, mode)
        for k in range(len(d.history) + 1):
            prefix = d.history[:k]
            rs = s.next_requests(task, prefix)
            if s.done(prefix):
                assert rs == [], f"asked {len(rs)} requests with history of {k} after done"

    @pytest.mark.parametrize("mode", ["fail", "pass", "mixed"])
    def test_requests_carry_the_promised_fields(self, setup: Setup, task: Task,
                                                mode: str) -> None:
        s = setup.build()
        d = drive(s, task, mode)
        seen: set[tuple[int, int]] = set()
        for requests, known in d.rounds:
            for r in requests:
                assert isinstance(r, Request)
                assert isinstance(r.messages, tuple) and r.messages
                assert all(set(m) == {"role", "content"} and isinstance(m["content"], str)
                           and m["content"] for m in r.messages)
                assert r.messages[0]["role"] == "system" and r.messages[-1]["role"] == "user"
                assert isinstance(r.n, int) and r.n >= 1
                assert isinstance(r.sample, int) and r.sample >= 0
                assert isinstance(r.turn, int) and r.turn >= 0
                assert all(isinstance(p, int) and 0 <= p < known for p in r.parents), (
                    f"parents {r.parents} are not ids of the {known} attempts so far")
                ctx = r.context(task)
                assert (ctx.problem, ctx.sample, ctx.turn) == ("level1/relu", r.sample, r.turn)
                for i in range(r.n):
                    key = (r.sample + i, r.turn)
                    assert key not in seen, f"(sample, turn) {key} asked for twice"
                    seen.add(key)
        for a in d.history:  # the attempts the loop recorded keep the request's lineage
            assert all(0 <= p < len(d.history) for p in a.parents)
            assert (a.code is None) == (a.verdict is None)

    def test_is_stateless_between_calls(self, setup: Setup, task: Task) -> None:
        """Everything a strategy needs is in the history (so a run resumes from the store):
        a fresh instance asks for the same requests at every point of a run."""
        s = setup.build()
        d = drive(s, task, "mixed")
        for requests, known in d.rounds:
            again = setup.build().next_requests(task, d.history[:known])
            assert [_shape(r) for r in again] == [_shape(r) for r in requests]

    def test_a_provider_error_is_an_attempt_without_feedback(self, setup: Setup,
                                                             task: Task) -> None:
        """A failed call is an attempt with no code and no verdict; it counts toward the
        budget, and the error (nothing the model said) never reaches a later prompt."""
        s = setup.build()
        d = drive(s, task, "error")
        assert d.history and all(a.code is None and a.verdict is None and not a.model_replied
                                 for a in d.history)
        assert d.provider is not None
        for call in d.provider.calls:
            assert not any(PROVIDER_ERROR in m["content"] for m in call.messages)

    def test_a_fatal_provider_error_stops_after_one_round(self, setup: Setup,
                                                          task: Task) -> None:
        s = setup.build()
        d = drive(s, task, "fatal")
        assert d.agent is not None and d.provider is not None
        assert d.agent.fatal_error and "key rejected" in d.agent.fatal_error
        assert len(d.provider.calls) == len(d.rounds[0][0])  # the first round only

    def test_the_run_budget_stops_the_calls(self, setup: Setup, task: Task) -> None:
        """Once the run's budget is spent no further request reaches the provider: one
        round is asked for, and of it no more than the agent admits (at most the round)."""
        s = setup.build()
        d = drive(s, task, "fail", budget=Budget(max_completions=1))
        assert d.provider is not None and d.agent is not None
        first = sum(r.n for r in d.rounds[0][0])
        assert 1 <= d.provider.asked <= first and len(d.rounds) == 1
        assert d.agent.stop_reason and "completions" in d.agent.stop_reason

    def test_every_registered_option_is_accepted(self, setup: Setup) -> None:
        """The runner passes exactly the settings strategy_options names: each one, given
        its default, must build."""
        cls = type(setup.build())
        params = inspect.signature(cls.__init__).parameters
        defaults = {k: params[k].default for k in strategy_options(setup.name)
                    if params[k].default is not inspect.Parameter.empty}
        assert isinstance(make_strategy(setup.name, **defaults), cls)

    def test_unknown_option_is_a_one_line_config_error(self, setup: Setup) -> None:
        with pytest.raises(ConfigError) as e:
            make_strategy(setup.name, **setup.options, bogus_knob=3)
        msg = str(e.value)
        assert "\n" not in msg and f"strategy {setup.name!r}" in msg and "bogus_knob" in msg


def _shape(r: Request) -> tuple[Any, ...]:
    return r.n, r.sample, r.turn, r.parents, r.messages


def test_unknown_strategy_is_a_one_line_config_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError) as e:
        make_strategy("beam-search")
    msg = str(e.value)
    assert "\n" not in msg and "unknown strategy 'beam-search'" in msg
    assert all(name in msg for name in available_strategies())
    with pytest.raises(ConfigError, match="unknown strategy"):
        strategy_options("beam-search")


def test_the_built_in_strategies_are_covered() -> None:
    assert {"oneshot", "refine"} <= set(available_strategies())
