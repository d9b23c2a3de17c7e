"""Providers driven through the real openai and anthropic SDKs against a fake local server."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agents.extract import extract_code
from agents.providers import (
    CompatibleProvider,
    OpenAIProvider,
    Provider,
    available_providers,
    make_provider,
)
from kbench.errors import ConfigError
from tests.fakes.llm_server import (
    CODE_REPLY,
    FakeLLMServer,
    Reply,
    llm_server_fixture,  # noqa: F401 - provides the llm_server fixture
    no_code,
    rate_limited,
    server_error,
    truncated,
)

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "write relu"}]
OPENAI_KEY = "sk-test-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-" + "test-0123456789abcdef"  # split: not a real key, keep scanners quiet
FAST = {"max_retries": 2, "timeout_s": 5.0}  # backoff comes from the server's retry-after-ms


@pytest.fixture
def openai_env(llm_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> FakeLLMServer:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.openai_url)
    return llm_server


@pytest.fixture
def anthropic_env(llm_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> FakeLLMServer:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", llm_server.url)
    return llm_server


def complete(p: Provider, n: int = 1, **kw):
    return p.complete_sync(MSGS, max_tokens=256, temperature=0.5, n=n, **kw)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once the socket closes


# -- retries and failures -------------------------------------------------------------------
@pytest.mark.parametrize("first", [rate_limited, server_error], ids=["429", "500"])
def test_openai_retries_then_succeeds(openai_env: FakeLLMServer, first) -> None:
    openai_env.script(first(), Reply())
    [c] = complete(make_provider("openai/gpt-4o", **FAST))
    assert c.ok and c.text == CODE_REPLY and c.finish_reason == "stop"
    assert len(openai_env.calls("/chat/completions")) == 2  # the SDK retried once


@pytest.mark.parametrize("first", [rate_limited, server_error], ids=["429", "500"])
def test_anthropic_retries_then_succeeds(anthropic_env: FakeLLMServer, first) -> None:
    anthropic_env.script(first(), Reply())
    [c] = complete(make_provider("anthropic/claude-opus-4-5", **FAST))
    assert c.ok and c.text == CODE_REPLY
    assert len(anthropic_env.calls("/v1/messages")) == 2


def test_persistent_server_error_is_a_failed_completion(openai_env: FakeLLMServer) -> None:
    openai_env.script(*[server_error() for _ in range(3)])
    [c] = complete(make_provider("openai/gpt-4o", **FAST))
    assert not c.ok and c.text == "" and c.finish_reason == "error"
    assert c.error_kind == "server" and "500" in c.error and not c.fatal
    assert len(openai_env.calls("/chat/completions")) == 3  # 1 + max_retries


def test_persistent_rate_limit_says_what_to_do(anthropic_env: FakeLLMServer) -> None:
    anthropic_env.script(*[rate_limited() for _ in range(3)])
    [c] = complete(make_provider("anthropic/claude-opus-4-5", **FAST))
    assert c.error_kind == "rate_limit" and "concurrency" in c.error


def test_unreachable_base_url_is_recorded_not_raised() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    p = make_provider("my-model", base_url=url, max_retries=0, timeout_s=2.0)
    [c] = complete(p)
    assert c.error_kind == "connection" and c.fatal
    assert url in c.error and "--base-url" in c.error
    assert "\n" not in c.error
    with pytest.raises(ConfigError, match="cannot reach"):
        asyncio.run(p.check())


def test_timeout_is_recorded(openai_env: FakeLLMServer) -> None:
    openai_env.script(Reply(delay_s=1.0))
    p = make_provider("openai/gpt-4o", max_retries=0, timeout_s=0.2)
    [c] = complete(p)
    assert c.error_kind == "timeout" and "0.2s" in c.error


def test_rejected_key_is_fatal_and_never_shown(openai_env: FakeLLMServer) -> None:
    openai_env.script(Reply(status=401, message="Incorrect API key provided: {key}"))
    p = make_provider("openai/gpt-4o", **FAST)
    [c] = complete(p)
    assert c.error_kind == "auth" and c.fatal and "OPENAI_API_KEY" in c.error
    assert OPENAI_KEY not in c.error and OPENAI_KEY[:12] not in c.error
    assert OPENAI_KEY not in repr(p) and OPENAI_KEY not in p.label
    assert len(openai_env.calls("/chat/completions")) == 1  # 401 is not retried


def test_unknown_model_is_fatal(anthropic_env: FakeLLMServer) -> None:
    anthropic_env.script(Reply(status=404, message="model: claude-nope"))
    p = make_provider("anthropic/claude-nope", **FAST)
    [c] = complete(p)
    assert c.error_kind == "not_found" and c.fatal and "--model" in c.error
    with pytest.raises(ConfigError, match="not found"):
        asyncio.run(p.check())


def test_reply_without_code_and_truncated_reply_are_completions(openai_env) -> None:
    openai_env.script(no_code(), truncated())
    p = make_provider("openai/gpt-4o", **FAST)
    [a] = complete(p)
    [b] = complete(p)
    assert a.ok and extract_code(a.text) is None
    assert b.ok and b.truncated and b.output_tokens == 4096
    assert "class ModelNew" in extract_code(b.text)


# -- accounting -----------------------------------------------------------------------------
def test_openai_usage_and_cost(openai_env: FakeLLMServer) -> None:
    openai_env.script(Reply(usage=(1000, 500)))
    [c] = complete(make_provider("openai/gpt-4o", **FAST))
    assert (c.input_tokens, c.output_tokens) == (1000, 500)
    assert c.cost_usd == pytest.approx((1000 * 2.5 + 500 * 10.0) / 1e6)
    assert c.raw_model == "gpt-4o" and c.latency_s > 0


def test_anthropic_usage_and_cost(anthropic_env: FakeLLMServer) -> None:
    anthropic_env.script(Reply(usage=(2000, 100), model="claude-opus-4-5-20251101"))
    [c] = complete(make_provider("anthropic/claude-opus-4-5", **FAST))
    assert (c.input_tokens, c.output_tokens) == (2000, 100)
    assert c.cost_usd == pytest.approx((2000 * 5.0 + 100 * 25.0) / 1e6)
    assert c.raw_model == "claude-opus-4-5-20251101"


def test_unknown_price_is_none_not_zero(openai_env: FakeLLMServer) -> None:
    openai_env.script(Reply(), Reply(usage=None))
    [c] = complete(make_provider("openai/brand-new-model", **FAST))
    assert c.ok and c.cost_usd is None
    [d] = complete(make_provider("openai/gpt-4o", **FAST))  # priced, but no usage sent
    assert d.ok and d.cost_usd is None


def test_price_override(openai_env: FakeLLMServer) -> None:
    from agents.pricing import price_table

    openai_env.script(Reply(usage=(1_000_000, 0)))
    p = make_provider("openai/brand-new-model", prices=price_table({"brand-new-model": {
        "input": 7.0, "output": 9.0}}), **FAST)
    [c] = complete(p)
    assert c.cost_usd == pytest.approx(7.0)


def test_local_compatible_server_is_free_remote_unknown_is_not() -> None:
    local = make_provider("Qwen/Qwen2.5-Coder-7B", base_url="http://127.0.0.1:8000/v1")
    remote = make_provider("Qwen/Qwen2.5-Coder-7B", base_url="https://api.example.com/v1")
    assert isinstance(local, CompatibleProvider) and local.model == "Qwen/Qwen2.5-Coder-7B"
    assert local._cost(10, 10) == 0.0 and remote._cost(10, 10) is None
    priced = make_provider("gpt-4o", base_url="https://api.example.com/v1")
    assert priced._cost(1_000_000, 0) == pytest.approx(2.5)


# -- n, request shape, concurrency ----------------------------------------------------------
def test_openai_n_choices_split_usage(openai_env: FakeLLMServer) -> None:
    openai_env.script(Reply(["a", "b", "c"], usage=(100, 301)))
    cs = complete(make_provider("openai/gpt-4o", **FAST), n=3)
    assert [c.text for c in cs] == ["a", "b", "c"]
    assert sum(c.input_tokens for c in cs) == 100 and sum(c.output_tokens for c in cs) == 301
    assert openai_env.calls("/chat/completions")[0].body["n"] == 3


def test_server_ignoring_n_gets_one_request_per_missing_choice(llm_server, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    llm_server.script(Reply("a"), Reply("b"), Reply("c"))
    p = make_provider("fake-model", base_url=llm_server.openai_url, **FAST)
    cs = complete(p, n=3)
    assert sorted(c.text for c in cs) == ["a", "b", "c"]
    assert all(c.cost_usd == 0.0 for c in cs)  # a local server
    calls = llm_server.calls("/chat/completions")
    assert len(calls) == 3
    assert calls[0].headers.get("authorization") == "Bearer EMPTY"  # no key needed locally


def test_a_model_may_name_its_own_server(llm_server, monkeypatch) -> None:
    """NAME@URL: one run mixes an OpenAI model and models of other servers; the model's own
    URL wins over --base-url, and the name is sent without it."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    llm_server.script(Reply("a"))
    p = make_provider(f"Qwen/Qwen2.5-Coder-7B@{llm_server.openai_url}",
                      base_url="http://127.0.0.1:1/v1", **FAST)
    assert isinstance(p, CompatibleProvider) and p.model == "Qwen/Qwen2.5-Coder-7B"
    [c] = complete(p)
    assert c.text == "a" and c.cost_usd == 0.0
    assert llm_server.calls("/chat/completions")[0].body["model"] == "Qwen/Qwen2.5-Coder-7B"
    assert isinstance(make_provider("openai/gpt-4o"), OpenAIProvider)
    with pytest.raises(ConfigError, match="not an http"):  # only http(s) URLs are split off
        make_provider("x", base_url="ftp://host")


def test_anthropic_request_shape(anthropic_env: FakeLLMServer) -> None:
    anthropic_env.script(Reply("a"), Reply("b"))
    cs = complete(make_provider("anthropic/claude-opus-4-5", **FAST), n=2)
    assert sorted(c.text for c in cs) == ["a", "b"]
    calls = anthropic_env.calls("/v1/messages")
    assert len(calls) == 2  # the API has no n
    body = calls[0].body
    assert body["system"] == "be brief" and body["max_tokens"] == 256
    assert [m["role"] for m in body["messages"]] == ["user"]
    sent = calls[0].headers.get("x-api-key") or calls[0].headers["authorization"]
    assert sent.removeprefix("Bearer ") == ANTHROPIC_KEY


def test_anthropic_auth_token(anthropic_env: FakeLLMServer, monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "tok-123")
    anthropic_env.script(Reply())
    [c] = complete(make_provider("anthropic/claude-opus-4-5", **FAST))
    assert c.ok
    assert anthropic_env.calls("/v1/messages")[0].headers["authorization"] == "Bearer tok-123"


def test_openai_parameters_per_model_family(openai_env: FakeLLMServer) -> None:
    openai_env.script(Reply(), Reply(), Reply())
    complete(make_provider("openai/gpt-4o", **FAST))
    complete(make_provider("openai/o3", **FAST))
    complete(make_provider("gpt-4o", base_url=openai_env.openai_url, **FAST))
    std, reasoning, compat = (c.body for c in openai_env.calls("/chat/completions"))
    assert std["max_completion_tokens"] == 256 and std["temperature"] == 0.5
    assert reasoning["max_completion_tokens"] == 256 and "temperature" not in reasoning
    assert compat["max_tokens"] == 256 and compat["temperature"] == 0.5


def test_concurrency_is_bounded(openai_env: FakeLLMServer) -> None:
    openai_env.script(*[Reply(delay_s=0.15) for _ in range(6)])
    p = make_provider("openai/gpt-4o", concurrency=4, **FAST)
    p.set_concurrency(2)

    async def many():
        try:
            return await asyncio.gather(*[
                p.complete(MSGS, max_tokens=8, temperature=0) for _ in range(6)])
        finally:
            await p.aclose()

    results = asyncio.run(many())
    assert all(c.ok for [c] in results)
    assert openai_env.max_in_flight == 2


def test_check_lists_served_models(llm_server: FakeLLMServer) -> None:
    good = make_provider("fake-model", base_url=llm_server.openai_url, **FAST)
    asyncio.run(good.check())
    bad = make_provider("other-model", base_url=llm_server.openai_url, **FAST)
    with pytest.raises(ConfigError, match="fake-model"):
        asyncio.run(bad.check())


# -- bad input ------------------------------------------------------------------------------
def test_missing_keys_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        make_provider("openai/gpt-4o")
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY is not set"):
        make_provider("anthropic/claude-sonnet-4-0")


@pytest.mark.parametrize(("model", "base_url", "match"), [
    ("mistral/large", None, "unknown provider 'mistral'"),
    ("gpt-4o", None, "names no provider"),
    ("openai/", None, "names no model"),
    ("compatible/x", None, "unknown provider"),
    ("replay:", None, "needs a path"),
    ("replay:/x", "http://localhost:1/v1", "does not apply"),
    ("x", "localhost:8000", "not an http"),
])
def test_bad_model_strings(model: str, base_url: str | None, match: str, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    with pytest.raises(ConfigError, match=match) as e:
        make_provider(model, base_url)
    assert "\n" not in str(e.value)


def test_registry_reports_availability() -> None:
    assert available_providers() == {
        "openai": True, "compatible": True, "anthropic": True, "replay": True}
    assert isinstance(make_provider("x", base_url="http://127.0.0.1:1/v1"), OpenAIProvider)
    # With an SDK missing, availability says so (decided at registration) and asking for
    # that provider is one line naming the package, even with its key set.
    code = textwrap.dedent("""
        import sys
        sys.modules["anthropic"] = None  # importlib.util.find_spec now finds nothing
        from agents.providers import available_providers, make_provider
        from sandbox.errors import ConfigError
        print(sorted(available_providers().items()))
        try:
            make_provider("anthropic/claude-sonnet-4-0")
        except ConfigError as e:
            print(e)
        """)
    env = {**os.environ, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "[('anthropic', False), ('compatible', True), ('openai', True), ('replay', True)]",
        "the anthropic package is not installed; pip install anthropic"]


def test_refused_temperature_is_dropped(openai_env: FakeLLMServer) -> None:
    openai_env.script(Reply(status=400, message="Unsupported parameter: 'temperature'"), Reply())
    p = make_provider("openai/gpt-9", **FAST)
    [c] = complete(p)
    assert c.ok
    first, second = (r.body for r in openai_env.calls("/chat/completions"))
    assert "temperature" in first and "temperature" not in second
