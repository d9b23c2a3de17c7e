"""A scripted provider and a fake verifier for search strategies (evolve): answers keyed by
(problem, sample), so the order calls are made in never changes an answer, and a verdict read
from the candidate's own ``SPEED`` / ``FAIL`` globals (they survive source normalisation).

    provider = KeyedProvider({("level1/relu", 0): candidate(speed=1.5)}, delay_s=0.05)
    verdict = fake_verdict("level1/relu", code)  # CORRECT at 1.5x, or INCORRECT with FAIL
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping

from agents.pricing import Price
from agents.providers import CallContext, Completion, Message, Provider
from sandbox.verdict import Status, Verdict

__all__ = ["KeyedProvider", "candidate", "fake_verdict"]


def candidate(tag: str, speed: float | None = None, fail: str | None = None,
              comment: str = "") -> str:
    """A reply holding a distinct candidate file; ``comment`` varies only its formatting."""
    lines = ["import torch", "", f"TAG = {tag!r}"]
    if speed is not None:
        lines.append(f"SPEED = {speed!r}")
    if fail is not None:
        lines.append(f"FAIL = {fail!r}")
    body = "\n".join(lines) + ("\n# " + comment + "\n\n" if comment else "\n") + (
        "\nclass ModelNew(torch.nn.Module):\n    def forward(self, x):\n        return x\n")
    return f"Here it is.\n\n```python\n{body}```\n"


def fake_verdict(problem: str, code: str, sol_pct: float | None = None) -> Verdict:
    """CORRECT with speedup ``SPEED`` (untimed without it), or INCORRECT with ``FAIL``."""
    fail = re.search(r"^FAIL = '([^']*)'", code, re.M)
    if fail:
        return Verdict(problem, Status.INCORRECT, fail.group(1), "cpu", "triton")
    speed = re.search(r"^SPEED = ([0-9.]+)", code, re.M)
    s = float(speed.group(1)) if speed else None
    return Verdict(problem, Status.CORRECT, "correct on 3 shapes", "cpu", "triton",
                   speedup_eager=s, sol_pct=sol_pct, timing_available=s is not None)


class KeyedProvider(Provider):
    """Answers ``script[(problem, sample)]`` (a reply text, or a Completion); records every
    call's context and messages and the peak number of calls in flight.

    ``cost_usd`` is charged per completion; with ``price`` (USD per 1M tokens, in and out)
    the provider is priced so a budget can reserve a call's worst case."""

    name = "keyed"
    supports_n = True

    def __init__(self, script: Mapping[tuple[str, int], str | Completion], *,
                 delay_s: float = 0.0, cost_usd: float = 0.0, price: float | None = None,
                 on_call: Callable[[CallContext], None] | None = None, concurrency: int = 64):
        prices = None if price is None else {"keyed-model": Price(price, price)}
        super().__init__("keyed-model", prices=prices, concurrency=concurrency)
        self.free = price is None
        self.script = dict(script)
        self.delay_s, self.cost_usd, self.on_call = delay_s, cost_usd, on_call
        self.calls: list[tuple[CallContext, list[Message]]] = []
        self.in_flight = self.peak_in_flight = 0

    async def _call(self, messages: list[Message], max_tokens: int, temperature: float, n: int,
                    context: CallContext | None) -> list[Completion]:
        assert context is not None
        self.calls.append((context, messages))
        if self.on_call is not None:
            self.on_call(context)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        out = []
        for i in range(n):
            r = self.script.get((context.problem, context.sample + i))
            if r is None:
                raise AssertionError(f"unscripted call {context.problem} sample "
                                     f"{context.sample + i}")
            out.append(r if isinstance(r, Completion) else Completion(
                r, input_tokens=100, output_tokens=100, cost_usd=self.cost_usd))
        return out

