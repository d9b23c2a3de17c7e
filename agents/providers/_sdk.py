"""What the OpenAI and Anthropic providers share: one SDK client per event loop, the SDK's
own retries and timeouts, and SDK errors turned into one line that says what to do."""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from types import ModuleType
from typing import Any

from agents.pricing import PriceTable
from agents.providers._base import Provider

__all__ = ["SDKProvider"]


class SDKProvider(Provider):
    """A provider whose calls go through an official SDK's async client.

    The SDK retries rate limits (honouring ``retry-after``), 408/409 and 5xx responses and
    connection errors ``max_retries`` times with its own backoff; ``timeout_s`` bounds each
    attempt.
    """

    key_env: str = ""  # the environment variable the key came from, for messages
    url_from: str = ""  # where the base URL is set, for messages

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str | None = None,
        prices: PriceTable | None = None,
        concurrency: int = 8,
        timeout_s: float = 600.0,
        max_retries: int = 4,
    ):
        super().__init__(model, prices=prices, concurrency=concurrency)
        self._secret = api_key
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._client_obj: Any = None

    @property
    @abstractmethod
    def sdk(self) -> ModuleType:
        """The SDK module (``openai`` or ``anthropic``), imported lazily."""

    @abstractmethod
    def _make_client(self) -> Any:
        """A new async SDK client with key, base URL, timeout and retries set."""

    def _client(self) -> Any:
        # A client's connections belong to the event loop that opened them: a new loop gets
        # a new client. Ours are built on plain httpx clients (the SDK's defaults), which,
        # unlike the SDK's own wrapper, do not try to close themselves on a dead loop when
        # dropped.
        loop = asyncio.get_running_loop()
        if self._client_loop is not loop:
            self._client_loop, self._client_obj = loop, self._make_client()
        return self._client_obj

    @property
    def where(self) -> str:
        """The server's URL, for messages (never with a key in it)."""
        if self._client_obj is not None:
            return str(self._client_obj.base_url).rstrip("/")
        return (self.base_url or "the API").rstrip("/")

    async def aclose(self) -> None:
        if self._client_obj is not None and self._client_loop is asyncio.get_running_loop():
            await self._client_obj.close()
        self._client_obj = self._client_loop = None

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (self.sdk.APIError,)

    def _describe(self, exc: BaseException) -> tuple[str, str]:
        sdk, where, retries = self.sdk, self.where, self.max_retries
        if isinstance(exc, sdk.APITimeoutError):
            return "timeout", (
                f"no reply from {where} within {self.timeout_s:g}s (after {retries} retries); "
                "raise the timeout or lower the concurrency"
            )
        if isinstance(exc, sdk.APIConnectionError):
            cause = exc.__cause__
            why = f" ({type(cause).__name__}: {cause})" if cause else ""
            return "connection", (
                f"cannot reach {where}{why}; check the network, or start the server or fix "
                f"{self.url_from}"
            )
        status = getattr(exc, "status_code", None)
        detail = _server_message(exc)
        if status == 401:
            return "auth", f"{where} rejected the API key (401: {detail}); set a valid {self.key_env}"
        if status == 403:
            return "auth", f"{where} refused access (403: {detail}); check what {self.key_env} may use"
        if status == 404:
            return "not_found", (
                f"model {self.model!r} not found at {where} (404: {detail}); check --model "
                "(and --base-url, which usually ends in /v1)"
            )
        if status == 429:
            return "rate_limit", (
                f"rate limited (429) after {retries} retries ({detail}); lower the concurrency "
                "or try again later"
            )
        if status is not None and status >= 500:
            return "server", f"server error {status} from {where} after {retries} retries ({detail})"
        if status == 400:
            return "bad_request", f"request rejected (400): {detail}"
        if status is not None:
            return "http", f"HTTP {status} from {where}: {detail}"
        return "error", f"{type(exc).__name__}: {exc}"


def _server_message(exc: BaseException) -> str:
    """The server's own words, from the usual ``{"error": {"message": ...}}`` bodies."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
    return str(getattr(exc, "message", exc))
