"""The provider interface: messages in, frozen :class:`Completion` records out.

A provider never raises for a failed call: rate limits that outlast the SDK's retries, server
errors, unreachable servers and rejected keys all come back as a ``Completion`` whose
``error`` says what happened and what to do, so the runner records a failed attempt and
moves on (or stops, when ``completion.fatal``). Bad configuration found before any call
(unknown provider, missing key) raises :class:`sandbox.errors.ConfigError` from
:func:`agents.providers.make_provider`.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from agents.pricing import PriceTable, cost
from agents.redact import redact

__all__ = ["Message", "CallContext", "Completion", "Provider", "FATAL_ERRORS"]

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}

# Errors after which every further call would fail the same way: the runner should stop.
FATAL_ERRORS = frozenset({"auth", "not_found", "connection", "config"})


@dataclass(frozen=True)
class CallContext:
    """What a call is for. Live providers ignore it; the replay provider looks answers up by it.

    ``sample`` is the index of the first completion asked for; completion ``i`` of a call
    with ``n`` > 1 is sample ``sample + i``.
    """

    problem: str  # problem key, "level1/relu" or "level1/19_ReLU"
    suite: str = ""
    name: str = ""
    sample: int = 0
    turn: int = 0
    backend: str = "triton"


@dataclass(frozen=True)
class Completion:
    """One reply of a model, or one failed attempt to get it (``error`` set, ``text`` "").

    Token counts of a call that returned several choices are split evenly over them, so
    sums over completions are the call's totals. ``cost_usd`` is ``None`` when the model
    has no known price, never a guessed 0.
    """

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = ""  # "stop", "length", "error", or the provider's own word
    latency_s: float = 0.0
    raw_model: str = ""  # the model the server says answered
    cost_usd: float | None = None
    error: str | None = None
    error_kind: str | None = None  # auth, not_found, connection, timeout, rate_limit, server, ...

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def fatal(self) -> bool:
        """True when retrying later calls is pointless (bad key, unknown model, no server)."""
        return self.error_kind in FATAL_ERRORS

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class Provider(ABC):
    """A source of completions. Subclasses implement :meth:`_call` (one request).

    Concurrency is bounded by a semaphore of ``concurrency`` slots per event loop; set it
    with :meth:`set_concurrency` before the first call. Drive a provider from one event
    loop (or with :meth:`complete_sync` from code that has none).
    """

    name: ClassVar[str] = ""
    supports_n: ClassVar[bool] = False  # can one request return several choices?
    free: bool = False  # True: calls cost 0 (replays, local servers)

    def __init__(self, model: str, *, prices: PriceTable | None = None, concurrency: int = 8):
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.model = model
        self.prices = prices
        self.concurrency = concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None
        self._secret: str | None = None  # scrubbed from every error message

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}(model={self.model!r})"

    @property
    def label(self) -> str:
        """``provider/model`` as recorded in the store."""
        return f"{self.name}/{self.model}"

    def set_concurrency(self, n: int) -> None:
        if n < 1:
            raise ValueError("concurrency must be >= 1")
        self.concurrency = n
        self._loop = None  # the next call makes a semaphore of the new size

    # -- the public call ------------------------------------------------------------------
    async def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        n: int = 1,
        context: CallContext | None = None,
    ) -> list[Completion]:
        """Exactly ``n`` completions for ``messages``; failures are completions with ``error``."""
        if n < 1:
            raise ValueError("n must be >= 1")
        msgs = [dict(m) for m in messages]
        out: list[Completion] = []
        if self.supports_n or n == 1:
            out = list((await self._guarded(msgs, max_tokens, temperature, n, context))[:n])
        if len(out) < n and all(c.ok for c in out):
            # One request per missing choice, concurrently: a provider without ``n``, or a
            # server that ignored it (as Ollama and llama.cpp do).
            rest = await asyncio.gather(*[
                self._guarded(msgs, max_tokens, temperature, 1, _shift(context, len(out) + i))
                for i in range(n - len(out))
            ])
            out += [c for cs in rest for c in cs[:1]]
        while len(out) < n:  # the call failed: every missing sample is a failed attempt
            failed = out[-1] if out and not out[-1].ok else None
            out.append(failed or _failed("the server returned no completion", "server"))
        return out

    def complete_sync(self, messages: Sequence[Message], **kw: Any) -> list[Completion]:
        """:meth:`complete` for callers without an event loop (closes its connections)."""

        async def once() -> list[Completion]:
            try:
                return await self.complete(messages, **kw)
            finally:
                await self.aclose()

        return asyncio.run(once())

    async def check(self) -> None:
        """Raise :class:`ConfigError` with one line if the provider cannot serve ``model``.

        Costs no tokens. The default checks nothing.
        """
        return None

    async def aclose(self) -> None:
        """Release connections (optional)."""
        return None

    # -- for subclasses -------------------------------------------------------------------
    @abstractmethod
    async def _call(
        self,
        messages: list[Message],
        max_tokens: int,
        temperature: float,
        n: int,
        context: CallContext | None,
    ) -> list[Completion]:
        """One request. Return up to ``n`` completions, or raise one of :meth:`_errors`."""

    def _errors(self) -> tuple[type[BaseException], ...]:
        """Exceptions of :meth:`_call` that are a failed call, not a bug (SDK errors)."""
        return ()

    def _describe(self, exc: BaseException) -> tuple[str, str]:
        """``(error_kind, one-line message)`` for an exception from :meth:`_errors`."""
        return "error", f"{type(exc).__name__}: {exc}"

    def _cost(self, input_tokens: int, output_tokens: int) -> float | None:
        if self.free:
            return 0.0
        return cost(self.model, input_tokens, output_tokens, self.prices)

    def _split(
        self, texts: Sequence[tuple[str, str]], input_tokens: int, output_tokens: int,
        latency_s: float, raw_model: str,
    ) -> list[Completion]:
        """Completions for the ``(text, finish_reason)`` choices of one call, usage split evenly."""
        k = max(len(texts), 1)
        out = []
        for i, (text, finish) in enumerate(texts):
            inp = input_tokens // k + (input_tokens % k if i == 0 else 0)
            outp = output_tokens // k + (output_tokens % k if i == 0 else 0)
            out.append(Completion(
                text=text, input_tokens=inp, output_tokens=outp, finish_reason=finish,
                latency_s=latency_s, raw_model=raw_model, cost_usd=self._cost(inp, outp),
            ))
        return out

    # -- internals ------------------------------------------------------------------------
    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._sem is None:
            self._loop, self._sem = loop, asyncio.Semaphore(self.concurrency)
        return self._sem

    async def _guarded(
        self, messages: list[Message], max_tokens: int, temperature: float, n: int,
        context: CallContext | None,
    ) -> list[Completion]:
        async with self._semaphore():
            t0 = time.perf_counter()
            try:
                return await self._call(messages, max_tokens, temperature, n, context)
            except self._errors() as e:
                kind, msg = self._describe(e)
                failed = _failed(scrub(msg, self._secret), kind)
                return [replace(failed, latency_s=time.perf_counter() - t0)]


def _shift(context: CallContext | None, by: int) -> CallContext | None:
    return None if context is None else replace(context, sample=context.sample + by)


def _failed(message: str, kind: str) -> Completion:
    return Completion(text="", finish_reason="error", error=scrub(message), error_kind=kind)


def scrub(message: str, *secrets: str | None, limit: int = 400) -> str:
    """``message`` as one line, without keys (:func:`agents.redact.redact`), at most
    ``limit`` characters."""
    message = " ".join(redact(message, *secrets).split())
    return message if len(message) <= limit else message[: limit - 3] + "..."
