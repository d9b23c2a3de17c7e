"""OpenAI's chat-completions API, and any server that speaks it (vLLM, SGLang, Ollama,
llama.cpp server, hosted OpenAI-compatible APIs)."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from types import ModuleType
from typing import Any

from agents.pricing import is_local_url, lookup
from agents.providers._base import CallContext, Completion, Message
from agents.providers._sdk import SDKProvider
from sandbox.errors import ConfigError

__all__ = ["OpenAIProvider", "CompatibleProvider"]

# OpenAI's reasoning models take no temperature other than the default.
_REASONING = re.compile(r"^(o\d+|gpt-5)([-.]|$)")


class OpenAIProvider(SDKProvider):
    """``--model openai/<name>``: the official ``openai`` SDK, key from ``OPENAI_API_KEY``.

    ``OPENAI_BASE_URL`` is respected (the SDK reads it) when no base URL is given.
    """

    name = "openai"
    supports_n = True
    key_env = "OPENAI_API_KEY"
    url_from = "OPENAI_BASE_URL"

    @property
    def sdk(self) -> ModuleType:
        import openai

        return openai

    def _make_client(self) -> Any:
        return self.sdk.AsyncOpenAI(
            api_key=self._secret,
            base_url=self.base_url,  # None: the SDK uses OPENAI_BASE_URL or api.openai.com
            timeout=self.timeout_s,
            max_retries=self.max_retries,
            http_client=self.sdk.DefaultAsyncHttpxClient(),  # see SDKProvider._client
        )

    _no_temperature = False  # set once the API has refused a temperature for this model

    def _params(self, max_tokens: int, temperature: float) -> dict[str, Any]:
        params: dict[str, Any] = {"max_completion_tokens": max_tokens}
        if not (self._no_temperature or _REASONING.match(self.model)):
            params["temperature"] = temperature
        return params

    async def _call(
        self, messages: list[Message], max_tokens: int, temperature: float, n: int,
        context: CallContext | None,
    ) -> list[Completion]:
        t0 = time.perf_counter()
        extra = {"n": n} if n > 1 else {}
        params = self._params(max_tokens, temperature)
        create = self._client().chat.completions.create
        try:
            resp = await create(model=self.model, messages=messages, **params, **extra)
        except self.sdk.BadRequestError as e:
            # Newer reasoning models refuse sampling parameters: ask again without one.
            if "temperature" not in params or "temperature" not in str(e).lower():
                raise
            self._no_temperature = True
            params.pop("temperature")
            resp = await create(model=self.model, messages=messages, **params, **extra)
        latency = time.perf_counter() - t0
        choices = sorted(resp.choices or [], key=lambda c: c.index)
        texts = [(c.message.content or "", c.finish_reason or "") for c in choices]
        usage = resp.usage
        inp = (usage.prompt_tokens or 0) if usage else 0
        out = (usage.completion_tokens or 0) if usage else 0
        completions = self._split(texts, inp, out, latency, resp.model or self.model)
        if usage is None and not self.free:  # tokens unknown: so is the cost
            completions = [replace(c, cost_usd=None) for c in completions]
        return completions

    async def check(self) -> None:
        """One free request (list models): the server is reachable, the key works and, where
        the server lists its models, it serves ``model``."""
        client = self._client().with_options(max_retries=0, timeout=min(self.timeout_s, 30.0))
        try:
            page = await client.models.list()
        except self.sdk.NotFoundError:
            return  # a server without a models endpoint: nothing more to check
        except self.sdk.APIError as e:
            raise ConfigError(self._describe(e)[1]) from None
        ids = [m.id for m in page.data]
        if ids and self.model not in ids:
            shown = ", ".join(ids[:8]) + (", ..." if len(ids) > 8 else "")
            raise ConfigError(
                f"{self.where} does not serve model {self.model!r}; it serves: {shown}. "
                "Pass one of them as --model"
            )


class CompatibleProvider(OpenAIProvider):
    """``--base-url URL --model <name>``: an OpenAI-compatible server, the name sent as
    written (``Qwen/Qwen2.5-Coder-32B-Instruct``, ``openai/gpt-oss-20b``).

    The key is ``OPENAI_API_KEY`` when set, else a placeholder (local servers need none).
    Calls to this machine or a private network cost 0 unless ``[prices]`` names the model.
    """

    name = "compatible"
    key_env = "OPENAI_API_KEY"
    url_from = "--base-url"

    @property
    def free(self) -> bool:
        return lookup(self.model, self.prices) is None and is_local_url(self.base_url or "")

    @property
    def label(self) -> str:
        return f"{self.base_url}#{self.model}"

    def _params(self, max_tokens: int, temperature: float) -> dict[str, Any]:
        # max_tokens, not max_completion_tokens: the one every compatible server knows.
        return {"max_tokens": max_tokens, "temperature": temperature}
