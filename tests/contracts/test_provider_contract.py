"""The contract every Provider passes: a subclass of :class:`ProviderContract` supplies one
fixture, ``harness``, that builds the provider through :func:`make_provider` and arranges its
answers (a fake local server for the SDK providers, a prepared recording for replay).

What is asserted is what :mod:`agents.providers._base` promises: ``complete`` returns exactly
``n`` frozen :class:`Completion` records and never raises for a failed call; usage is split
evenly over choices (sums are the call's totals); ``cost_usd`` is ``None`` for an unknown
price, never a guessed 0, and 0 for free providers; a failed call is a completion with
``error`` (one line, no key), ``error_kind`` and ``fatal``; the SDK retries rate limits and
server errors itself; concurrency is bounded by ``concurrency``; the key never shows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from agents.pricing import cost
from agents.providers import (
    FATAL_ERRORS,
    CallContext,
    Completion,
    Provider,
    available_providers,
    make_provider,
)
from kbench.errors import ConfigError
from tests.fakes.llm_server import (
    FakeLLMServer,
    Reply,
    llm_server_fixture,  # noqa: F401 - provides the llm_server fixture
    rate_limited,
    server_error,
)

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "write relu"}]
CTX = CallContext("level1/relu", suite="level1", name="relu")
OPENAI_KEY = "sk-test-contract-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-" + "test-contract-0123456789abcdef"  # split: keep key scanners quiet
RETRIES = 2  # the SDK's retries in these tests; backoff comes from retry-after-ms


class Harness:
    """One provider kind under test. ``live``: it talks to a server (errors, retries and
    timeouts can be scripted); replay answers from a file and has none of those."""

    name = ""
    live = True
    secret = ""
    priced_model = ""  # a model with a known price
    unpriced_model = "brand-new-model-7"

    def make(self, model: str | None = None, **kw: object) -> Provider:
        raise NotImplementedError

    def prepare(self, *texts: str, usage: tuple[int, int] = (120, 80)) -> tuple[int, int]:
        """Arrange ``texts`` as the next answers (samples 0, 1, ... of one ``complete``
        call); returns the (input, output) tokens the call will report in total."""
        raise NotImplementedError

    def prepare_failure(self, n: int = 1) -> None:
        """Arrange that the next ``complete(n=n)`` fails."""
        raise NotImplementedError


class ServerHarness(Harness):
    path = ""  # the completion route on the fake server

    def __init__(self, server: FakeLLMServer, mp: pytest.MonkeyPatch) -> None:
        self.server = server
        self.mp = mp

    @property
    def supports_n(self) -> bool:
        return type(self.make()).supports_n

    def prepare(self, *texts: str, usage: tuple[int, int] = (120, 80)) -> tuple[int, int]:
        if self.supports_n:
            self.server.script(Reply(list(texts), usage=usage))
            return usage
        self.server.script(*[Reply(t, usage=usage) for t in texts])
        return usage[0] * len(texts), usage[1] * len(texts)

    def prepare_failure(self, n: int = 1) -> None:
        self.server.script(*[Reply(status=401, message="Incorrect API key: {key}")
                             for _ in range(n)])

    @property
    def completions(self) -> int:
        return len(self.server.calls(self.path))


class OpenAIHarness(ServerHarness):
    name, secret, priced_model, path = "openai", OPENAI_KEY, "gpt-4o", "/chat/completions"

    def __init__(self, server: FakeLLMServer, mp: pytest.MonkeyPatch) -> None:
        super().__init__(server, mp)
        mp.setenv("OPENAI_API_KEY", self.secret)
        mp.setenv("OPENAI_BASE_URL", server.openai_url)

    def make(self, model: str | None = None, **kw: object) -> Provider:
        kw = {"max_retries": RETRIES, "timeout_s": 5.0, **kw}
        return make_provider(f"openai/{model or self.priced_model}", **kw)  # type: ignore[arg-type]


class CompatibleHarness(OpenAIHarness):
    name = "compatible"

    def make(self, model: str | None = None, **kw: object) -> Provider:
        kw = {"max_retries": RETRIES, "timeout_s": 5.0, **kw}
        return make_provider(model or self.priced_model, base_url=self.server.openai_url,
                             **kw)  # type: ignore[arg-type]


class AnthropicHarness(ServerHarness):
    name, secret, priced_model, path = ("anthropic", ANTHROPIC_KEY, "claude-haiku-4-5",
                                        "/v1/messages")

    def __init__(self, server: FakeLLMServer, mp: pytest.MonkeyPatch) -> None:
        super().__init__(server, mp)
        mp.setenv("ANTHROPIC_API_KEY", self.secret)
        mp.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
        mp.setenv("ANTHROPIC_BASE_URL", server.url)

    def make(self, model: str | None = None, **kw: object) -> Provider:
        kw = {"max_retries": RETRIES, "timeout_s": 5.0, **kw}
        return make_provider(f"anthropic/{model or self.priced_model}", **kw)  # type: ignore[arg-type]


class ReplayHarness(Harness):
    name, live = "replay", False
    secret = OPENAI_KEY  # in the environment, as it would be during a run

    def __init__(self, folder: Path, mp: pytest.MonkeyPatch) -> None:
        mp.setenv("OPENAI_API_KEY", self.secret)
        self.file = folder / "replay.jsonl"
        self.file.write_text(json.dumps({"problem": "level1/other", "response": "x"}) + "\n")

    def make(self, model: str | None = None, **kw: object) -> Provider:
        kw.pop("max_retries", None), kw.pop("timeout_s", None)
        return make_provider(f"replay:{self.file}", **kw)  # type: ignore[arg-type]

    def prepare(self, *texts: str, usage: tuple[int, int] = (120, 80)) -> tuple[int, int]:
        self.file.write_text("".join(json.dumps({"problem": CTX.problem, "response": t,
                                                 "sample": i}) + "\n"
                                     for i, t in enumerate(texts)))
        return 0, 0  # a recording knows no usage

    def prepare_failure(self, n: int = 1) -> None:
        self.file.write_text(json.dumps({"problem": "level1/other", "response": "x"}) + "\n")


def complete(p: Provider, n: int = 1, **kw: object) -> list[Completion]:
    return p.complete_sync(MSGS, max_tokens=256, temperature=0.5, n=n, context=CTX, **kw)


def assert_no_secret(secret: str, *texts: str) -> None:
    for t in texts:
        assert secret not in t and secret[:14] not in t, t


def assert_failed(c: Completion) -> None:
    """What the base promises of a failed attempt."""
    assert not c.ok and c.text == "" and c.finish_reason == "error"
    assert isinstance(c.error, str) and c.error and "\n" not in c.error and len(c.error) <= 400
    assert isinstance(c.error_kind, str) and c.error_kind
    assert c.fatal == (c.error_kind in FATAL_ERRORS)


class ProviderContract:
    """Inherit and supply a ``harness`` fixture returning a :class:`Harness`."""

    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        raise NotImplementedError

    def need_server(self, h: Harness) -> None:
        if not h.live:
            pytest.skip(f"{h.name} answers from a recording: no server to script errors, "
                        "retries, timeouts or cancellation against")

    # -- registration and records --------------------------------------------------------
    def test_is_the_registered_provider(self, harness: Harness) -> None:
        p = harness.make()
        assert isinstance(p, Provider) and p.name == harness.name
        assert available_providers()[harness.name] is True

    def test_completion_has_text_usage_and_cost(self, harness: Harness) -> None:
        tokens = harness.prepare("the answer", usage=(1000, 500))
        p = harness.make()
        [c] = complete(p)
        assert c.ok and c.error is None and c.error_kind is None and not c.fatal
        assert c.text == "the answer" and c.finish_reason == "stop" and not c.truncated
        assert (c.input_tokens, c.output_tokens) == tokens
        assert c.raw_model and c.latency_s >= 0
        if p.free:
            assert c.cost_usd == 0.0
        else:
            assert c.cost_usd == pytest.approx(cost(p.model, *tokens, p.prices))
            assert c.cost_usd > 0
        with pytest.raises(FrozenInstanceError):
            c.text = "changed"  # type: ignore[misc]

    def test_unknown_price_is_none_never_zero(self, harness: Harness) -> None:
        harness.prepare("x")
        p = harness.make(harness.unpriced_model)
        [c] = complete(p)
        assert c.ok
        assert c.cost_usd == (0.0 if p.free else None)

    def test_exactly_n_completions_with_usage_summing_to_the_call(self, harness: Harness) -> None:
        total = harness.prepare("a", "b", "c", usage=(100, 301))
        cs = complete(harness.make(), n=3)
        assert len(cs) == 3 and all(c.ok for c in cs)
        assert sorted(c.text for c in cs) == ["a", "b", "c"]
        assert (sum(c.input_tokens for c in cs), sum(c.output_tokens for c in cs)) == total

    def test_n_below_one_is_refused(self, harness: Harness) -> None:
        with pytest.raises(ValueError, match="n must be >= 1"):
            complete(harness.make(), n=0)
        with pytest.raises(ValueError, match="concurrency"):
            harness.make(concurrency=0)

    # -- failures are records, never exceptions -----------------------------------------
    def test_a_failed_call_is_n_failed_completions(self, harness: Harness,
                                                   caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG)
        harness.prepare_failure(n=2)
        p = harness.make()
        cs = complete(p, n=2)
        assert len(cs) == 2
        for c in cs:
            assert_failed(c)
        assert_no_secret(harness.secret, *(c.error or "" for c in cs), repr(p), p.label,
                         *(r.getMessage() for r in caplog.records))

    def test_key_never_in_repr_label_or_records(self, harness: Harness) -> None:
        harness.prepare("fine")
        p = harness.make()
        cs = complete(p)
        assert_no_secret(harness.secret, repr(p), p.label, *(repr(c) for c in cs))

    @pytest.mark.parametrize(("replies", "kind", "requests"), [
        pytest.param(lambda: [Reply(status=401, message="Incorrect API key: {key}")],
                     "auth", 1, id="401"),
        pytest.param(lambda: [Reply(status=403, message="key {key} may not use this")],
                     "auth", 1, id="403"),
        pytest.param(lambda: [Reply(status=404, message="no model for key {key}")],
                     "not_found", 1, id="404"),
        pytest.param(lambda: [Reply(status=400, message="max tokens too large for {key}")],
                     "bad_request", 1, id="400"),
        pytest.param(lambda: [rate_limited() for _ in range(RETRIES + 1)],
                     "rate_limit", RETRIES + 1, id="429"),
        pytest.param(lambda: [server_error() for _ in range(RETRIES + 1)],
                     "server", RETRIES + 1, id="500"),
    ])
    def test_errors_map_to_one_kind_and_one_clean_line(
        self, harness: Harness, replies: Callable[[], list[Reply]], kind: str, requests: int,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """The server echoes the key in its error; the message must not. Client errors
        are not retried, rate limits and server errors are (by the SDK), up to max_retries."""
        self.need_server(harness)
        assert isinstance(harness, ServerHarness)
        caplog.set_level(logging.DEBUG)
        for r in replies():
            r.message = r.message or "failed for {key}"
            if "{key}" not in r.message:
                r.message += " ({key})"
            harness.server.script(r)
        p = harness.make()
        [c] = complete(p)
        assert_failed(c)
        assert c.error_kind == kind, c.error
        assert harness.completions == requests
        if kind == "auth":
            assert p.key_env in c.error  # type: ignore[attr-defined] - says what to set
        if kind in ("rate_limit", "server"):
            assert f"after {RETRIES} retries" in c.error
        assert_no_secret(harness.secret, c.error or "", repr(c),
                         *(r.getMessage() for r in caplog.records))

    @pytest.mark.parametrize("first", [rate_limited, server_error], ids=["429", "500"])
    def test_sdk_retries_rate_limits_and_server_errors(self, harness: Harness, first) -> None:
        self.need_server(harness)
        assert isinstance(harness, ServerHarness)
        harness.server.script(first(), Reply("after the retry"))
        [c] = complete(harness.make())
        assert c.ok and c.text == "after the retry"
        assert harness.completions == 2

    def test_check_failure_is_one_line_config_error_without_key(self, harness: Harness) -> None:
        self.need_server(harness)
        assert isinstance(harness, ServerHarness)
        p = harness.make()
        harness.server.stop()  # nothing answers any more
        with pytest.raises(ConfigError) as e:
            asyncio.run(p.check())
        assert "\n" not in str(e.value)
        assert_no_secret(harness.secret, str(e.value), repr(e.value))

    # -- time ----------------------------------------------------------------------------
    def test_timeout_bounds_each_attempt(self, harness: Harness) -> None:
        self.need_server(harness)
        assert isinstance(harness, ServerHarness)
        harness.server.script(Reply(delay_s=3.0))
        p = harness.make(timeout_s=0.3, max_retries=0)
        t0 = time.monotonic()
        [c] = complete(p)
        assert time.monotonic() - t0 < 2.5
        assert_failed(c)
        assert c.error_kind == "timeout" and "0.3s" in c.error and not c.fatal

    def test_cancellation_propagates_and_frees_the_slot(self, harness: Harness) -> None:
        """A cancelled ``complete`` is not turned into a failed completion: the caller's
        CancelledError reaches it, and its concurrency slot is free for the next call."""
        self.need_server(harness)
        harness.server.script(Reply("slow", delay_s=3.0), Reply("next"))  # type: ignore[attr-defined]
        p = harness.make(concurrency=1)

        async def go() -> list[Completion]:
            try:
                task = asyncio.create_task(p.complete(MSGS, max_tokens=8, temperature=0))
                await asyncio.sleep(0.3)
                t0 = time.monotonic()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert time.monotonic() - t0 < 1.0
                return await asyncio.wait_for(
                    p.complete(MSGS, max_tokens=8, temperature=0), timeout=5)
            finally:
                await p.aclose()

        [c] = asyncio.run(go())
        assert c.ok and c.text == "next"

    def test_concurrency_is_bounded(self, harness: Harness) -> None:
        self.need_server(harness)
        assert isinstance(harness, ServerHarness)
        harness.server.script(*[Reply(delay_s=0.1) for _ in range(6)])
        p = harness.make(concurrency=2)

        async def many() -> list[list[Completion]]:
            try:
                return await asyncio.gather(*[
                    p.complete(MSGS, max_tokens=8, temperature=0) for _ in range(6)])
            finally:
                await p.aclose()

        assert all(c.ok for [c] in asyncio.run(many()))
        assert harness.server.max_in_flight == 2


class TestOpenAI(ProviderContract):
    @pytest.fixture
    def harness(self, llm_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> Harness:
        return OpenAIHarness(llm_server, monkeypatch)


class TestCompatible(ProviderContract):
    @pytest.fixture
    def harness(self, llm_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> Harness:
        return CompatibleHarness(llm_server, monkeypatch)


class TestAnthropic(ProviderContract):
    @pytest.fixture
    def harness(self, llm_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> Harness:
        return AnthropicHarness(llm_server, monkeypatch)


class TestReplay(ProviderContract):
    @pytest.fixture
    def harness(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
        return ReplayHarness(tmp_path, monkeypatch)

    def test_missing_recording_is_a_failed_attempt_not_fatal(self, harness: Harness) -> None:
        harness.prepare("only sample 0")
        cs = complete(harness.make(), n=2)
        assert cs[0].ok and cs[0].text == "only sample 0"
        assert_failed(cs[1])
        assert cs[1].error_kind == "replay_missing" and "sample 1" in cs[1].error


def test_every_registered_provider_has_a_contract_suite() -> None:
    """A provider registered later fails here until it gets a ``Test...`` class above."""
    covered = {OpenAIHarness.name, CompatibleHarness.name, AnthropicHarness.name,
               ReplayHarness.name}
    assert set(available_providers()) <= covered, set(available_providers()) - covered
    assert all(available_providers().values())  # the SDKs are dev dependencies
