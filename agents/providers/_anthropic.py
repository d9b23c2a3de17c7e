"""Anthropic's messages API through the official ``anthropic`` SDK."""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any

from agents.providers._base import CallContext, Completion, Message
from agents.providers._sdk import SDKProvider
from sandbox.errors import ConfigError

__all__ = ["AnthropicProvider"]

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


class AnthropicProvider(SDKProvider):
    """``--model anthropic/<name>``: key from ``ANTHROPIC_API_KEY`` (or
    ``ANTHROPIC_AUTH_TOKEN``); ``ANTHROPIC_BASE_URL`` is respected by the SDK.

    The API has no ``n``: several samples are several requests. System messages are passed
    as the separate ``system`` argument, as the API wants. No temperature is sent: the
    SDK's messages API no longer takes one (the model's default sampling applies).
    """

    name = "anthropic"
    supports_n = False
    key_env = "ANTHROPIC_API_KEY"
    url_from = "ANTHROPIC_BASE_URL"

    def __init__(self, model: str, *, auth_token: bool = False, **kw: Any):
        super().__init__(model, **kw)
        self._auth_token = auth_token  # the secret is a bearer token, not an x-api-key
        if auth_token:
            self.key_env = "ANTHROPIC_AUTH_TOKEN"

    @property
    def sdk(self) -> ModuleType:
        import anthropic

        return anthropic

    def _make_client(self) -> Any:
        cred = {"auth_token": self._secret} if self._auth_token else {"api_key": self._secret}
        return self.sdk.AsyncAnthropic(
            **cred, base_url=self.base_url, timeout=self.timeout_s, max_retries=self.max_retries,
            http_client=self.sdk.DefaultAsyncHttpxClient(),  # see SDKProvider._client
        )

    async def _call(
        self, messages: list[Message], max_tokens: int, temperature: float, n: int,
        context: CallContext | None,
    ) -> list[Completion]:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        chat = [m for m in messages if m["role"] != "system"]
        extra = {"system": system} if system else {}
        t0 = time.perf_counter()
        resp = await self._client().messages.create(
            model=self.model, max_tokens=max_tokens, messages=chat, **extra,
        )
        latency = time.perf_counter() - t0
        text = "".join(b.text for b in resp.content or [] if getattr(b, "type", "") == "text")
        finish = _FINISH.get(resp.stop_reason or "", resp.stop_reason or "")
        u = resp.usage
        # Cached prompt tokens are prompt tokens too (priced here at the base input rate).
        inp = (u.input_tokens or 0) + (u.cache_creation_input_tokens or 0) + (
            u.cache_read_input_tokens or 0
        )
        return self._split([(text, finish)], inp, u.output_tokens or 0, latency, resp.model or "")

    async def check(self) -> None:
        """One free request (retrieve the model): reachable, key accepted, model known."""
        client = self._client().with_options(max_retries=0, timeout=min(self.timeout_s, 30.0))
        try:
            await client.models.retrieve(self.model)
        except self.sdk.APIError as e:
            raise ConfigError(self._describe(e)[1]) from None
