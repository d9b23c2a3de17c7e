"""A scripted in-process Provider for tests: no server, no SDK, every call recorded.

Not registered (the registry lists real providers only); build it directly::

    p = ScriptedProvider(lambda call, i: Completion(f"answer {call}.{i}"))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agents.providers import CallContext, Completion, Message, Provider

__all__ = ["ScriptedProvider", "Call"]


@dataclass(frozen=True)
class Call:
    messages: list[Message]
    n: int
    context: CallContext | None


class ScriptedProvider(Provider):
    """Answers ``reply(call_index, choice_index, context)`` for each choice of each request."""

    name = "scripted"
    supports_n = True
    free = True

    def __init__(self, reply: Callable[[int, int, CallContext | None], Completion]) -> None:
        super().__init__("scripted-model")
        self.reply = reply
        self.calls: list[Call] = []

    async def _call(self, messages: list[Message], max_tokens: int, temperature: float, n: int,
                    context: CallContext | None) -> list[Completion]:
        k = len(self.calls)
        self.calls.append(Call(messages, n, context))
        return [self.reply(k, i, context) for i in range(n)]

    @property
    def asked(self) -> int:
        """Completions asked for so far (the sum of the requests' ``n``)."""
        return sum(c.n for c in self.calls)
