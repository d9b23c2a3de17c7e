"""Strategies and the agent loop, driven by replay and the fake server (no network, no GPU)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agents import Agent, Attempt, Budget, Task, make_provider, make_strategy
from agents.providers import Completion
from agents.strategies import OneShot, Refine, Strategy, available_strategies
from kbench.errors import ConfigError
from kbench.problems import load_file
from sandbox.verdict import Status, Verdict
from tests.fakes.llm_server import (
    FakeLLMServer,
    Reply,
    llm_server_fixture,  # noqa: F401 - provides llm_server
)

RELU = Path(__file__).resolve().parents[1] / "problems" / "level1" / "relu.py"
CODE = "import torch\n\nclass ModelNew(torch.nn.Module):\n    pass  # {tag}\n"


@pytest.fixture(scope="module")
def task() -> Task:
    return Task(load_file(RELU, key="level1/relu", suite="level1"), example="# example")


def verdict(ok: bool, speedup: float | None = None, reason: str = "") -> Verdict:
    return Verdict("level1/relu", Status.CORRECT if ok else Status.INCORRECT,
                   reason or ("" if ok else "wrong values"), "cuda:0", "triton",
                   speedup_eager=speedup, timing_available=speedup is not None)


def att(sample: int, turn: int, v: Verdict | None, code: str | None = "x") -> Attempt:
    return Attempt(sample, turn, Completion("x"), code, v)


def run(agent: Agent, task: Task, judge) -> list[Attempt]:
    """The runner's loop in miniature; ``judge(code) -> Verdict``."""
    history: list[Attempt] = []

    async def loop() -> None:
        try:
            while not agent.done(history):
                proposals = await agent.propose(task, history)
                if not proposals:
                    break
                for p in proposals:
                    history.append(p.attempt(judge(p.code) if p.code else None))
        finally:
            await agent.provider.aclose()

    asyncio.run(loop())
    return history


# -- the strategies on their own ------------------------------------------------------------
def test_oneshot_asks_once_for_n_samples(task: Task) -> None:
    s = OneShot(samples=4)
    [r] = s.next_requests(task, [])
    assert (r.n, r.sample, r.turn) == (4, 0, 0) and s.max_attempts == 4
    assert not s.done([att(i, 0, None) for i in range(3)])
    assert s.done([att(i, 0, None) for i in range(4)])
    assert s.next_requests(task, [att(i, 0, None) for i in range(4)]) == []


def test_refine_feeds_each_lineage_its_own_verdicts(task: Task) -> None:
    s = Refine(turns=3, samples=2)
    [first] = s.next_requests(task, [])
    assert (first.n, first.turn) == (2, 0)
    history = [att(0, 0, verdict(False, reason="lineage zero failed"), code="code zero"),
               att(1, 0, verdict(True, 1.3), code="code one")]
    r0, r1 = s.next_requests(task, history)
    assert (r0.sample, r0.turn, r0.parents, r0.n) == (0, 1, (0,), 1)
    assert (r1.sample, r1.turn, r1.parents) == (1, 1, (1,))
    assert "lineage zero failed" in r0.messages[-1]["content"]
    assert "code zero" in r0.messages[-1]["content"]
    assert "code one" in r1.messages[-1]["content"] and "1.30x" in r1.messages[-1]["content"]
    history += [att(0, 1, verdict(False)), att(1, 1, verdict(True, 1.5))]
    assert not s.done(history)
    history += [att(0, 2, verdict(False)), att(1, 2, verdict(True, 1.6))]
    assert s.done(history) and s.next_requests(task, history) == []


def test_refine_can_stop_when_correct(task: Task) -> None:
    s = Refine(turns=5, stop_when_correct=True)
    assert not s.done([att(0, 0, verdict(False))])
    assert s.done([att(0, 0, verdict(False)), att(0, 1, verdict(True, 1.1))])


def test_ranked_by_fast_p_fitness() -> None:
    history = [att(0, 0, verdict(True, 1.2)), att(1, 0, verdict(False)),
               att(2, 0, verdict(True, 2.0)), att(3, 0, verdict(True, None)), att(4, 0, None)]
    assert Strategy.ranked(history) == [2, 0, 3, 1, 4]
    assert Strategy.lineages(history + [att(0, 1, None)])[0] == [0, 5]


def test_make_strategy_errors() -> None:
    assert {"oneshot", "refine"} <= set(available_strategies())
    assert isinstance(make_strategy("refine", turns=2), Refine)
    with pytest.raises(ConfigError, match="unknown strategy 'beam'; choose one of"):
        make_strategy("beam")
    with pytest.raises(ConfigError, match="turns must be a positive integer"):
        make_strategy("refine", turns=0)
    with pytest.raises(ConfigError, match="strategy 'oneshot'"):
        make_strategy("oneshot", turns=3)


# -- the agent loop -------------------------------------------------------------------------
def test_refine_loop_over_replay(tmp_path: Path, task: Task) -> None:
    f = tmp_path / "r.jsonl"
    f.write_text("\n".join(json.dumps({"problem": "level1/relu", "turn": t,
                                       "response": f"```python\n{CODE.format(tag=t)}```"})
                           for t in range(3)))
    agent = Agent(make_provider(f"replay:{f}"), make_strategy("refine", turns=3))
    history = run(agent, task, lambda code: verdict("# 2" in code, 1.4 if "# 2" in code else None))
    assert [(a.sample, a.turn, a.passed) for a in history] == [
        (0, 0, False), (0, 1, False), (0, 2, True)]
    assert history[2].parents == (1,) and history[2].fitness == 1.4
    assert agent.budget.spend.completions == 3 and agent.budget.spend.cost_usd == 0.0


def test_no_code_is_a_recorded_failed_attempt(llm_server: FakeLLMServer, task: Task) -> None:
    llm_server.script(Reply("no code, sorry"), Reply(["```python\nx = 1\n```", "nothing"]))
    agent = Agent(make_provider("m", base_url=llm_server.openai_url, max_retries=0),
                  OneShot(samples=2))
    history = run(agent, task, lambda code: verdict(True))
    # the server answered 1 choice to n=2, so one more request was made
    assert [a.code for a in history] == [None, "x = 1\n"]
    assert history[0].verdict is None and history[1].passed


def test_fatal_error_stops_the_agent(task: Task) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    agent = Agent(make_provider("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0,
                                timeout_s=2.0), make_strategy("refine", turns=5))
    history = run(agent, task, lambda code: verdict(True))
    assert len(history) == 1 and history[0].completion.error_kind == "connection"
    assert agent.fatal_error and "cannot reach" in agent.fatal_error


def test_budget_stops_the_agent(llm_server: FakeLLMServer, task: Task, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000000")
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.openai_url)
    llm_server.script(*[Reply(usage=(400_000, 100_000)) for _ in range(5)])
    agent = Agent(make_provider("openai/gpt-4o", max_retries=0), make_strategy("refine", turns=5),
                  budget=Budget(max_usd=3.0))
    history = run(agent, task, lambda code: verdict(False))
    # each call costs $2.00: the second crosses $3 and the run stops there
    assert len(history) == 2 and agent.stop_reason.startswith("spent $4.00")
    assert llm_server.pending == 3
