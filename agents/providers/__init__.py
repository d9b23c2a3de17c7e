"""LLM providers, registered by name, and :func:`make_provider` that parses ``--model``.

``--model`` forms:

* ``openai/<name>``: OpenAI (``OPENAI_API_KEY``; ``OPENAI_BASE_URL`` respected);
* ``anthropic/<name>``: Anthropic (``ANTHROPIC_API_KEY``; ``ANTHROPIC_BASE_URL`` respected);
* ``replay:<PATH>``: recorded generations (see :mod:`agents.providers._replay`);
* ``<name>`` with ``--base-url URL``: any OpenAI-compatible server; the name is sent as
  written, slashes included (``Qwen/Qwen2.5-Coder-32B-Instruct``);
* ``<name>@<URL>``: the same with a server of its own, so that one run can mix models of
  several servers and providers (``--model openai/gpt-4o --model
  qwen2.5-coder@http://localhost:8000/v1``); its URL overrides ``--base-url``.

Example:
    >>> p = make_provider("replay:kbench/examples")              # doctest: +SKIP
    >>> [c] = p.complete_sync([], max_tokens=1, temperature=0,
    ...                       context=CallContext("level1/relu"))   # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents.pricing import PriceTable
from agents.providers._anthropic import AnthropicProvider
from agents.providers._base import FATAL_ERRORS, CallContext, Completion, Message, Provider
from agents.providers._openai import CompatibleProvider, OpenAIProvider
from agents.providers._replay import ReplayProvider
from sandbox.errors import ConfigError

__all__ = [
    "Provider",
    "Completion",
    "CallContext",
    "Message",
    "FATAL_ERRORS",
    "OpenAIProvider",
    "CompatibleProvider",
    "AnthropicProvider",
    "ReplayProvider",
    "ProviderOptions",
    "register_provider",
    "available_providers",
    "make_provider",
]

_USAGE = (
    "use openai/<model>, anthropic/<model>, replay:<path>, or --base-url URL with the "
    "server's model name"
)


@dataclass(frozen=True)
class ProviderOptions:
    """Settings every provider factory receives."""

    base_url: str | None = None
    prices: PriceTable | None = None
    concurrency: int = 8
    timeout_s: float = 600.0
    max_retries: int = 4


Factory = Callable[[str, ProviderOptions], Provider]


@dataclass(frozen=True)
class _Entry:
    build: Factory
    available: bool
    hint: str  # what to do when not available


_REGISTRY: dict[str, _Entry] = {}


def register_provider(name: str, build: Factory, *, available: bool = True, hint: str = "") -> None:
    """Register ``build(model, options)`` for ``--model <name>/<model>``.

    ``available`` is decided here, at registration (is the SDK installed?), not at call time;
    ``hint`` is the one line shown when someone asks for an unavailable provider.
    """
    _REGISTRY[name] = _Entry(build, available, hint)


def available_providers() -> dict[str, bool]:
    """Registered provider names and whether each can be used here."""
    return {name: e.available for name, e in _REGISTRY.items()}


def make_provider(
    model: str,
    base_url: str | None = None,
    *,
    prices: PriceTable | None = None,
    concurrency: int = 8,
    timeout_s: float = 600.0,
    max_retries: int = 4,
) -> Provider:
    """The provider that ``--model`` (and ``--base-url``) name. Connects to nothing.

    Raises :class:`ConfigError` with one line saying what to do: unknown provider, missing
    key, an SDK that is not installed, a malformed base URL.
    """
    model = model.strip()
    for scheme in ("@http://", "@https://"):  # NAME@URL: this model's own server
        at = model.find(scheme)
        if at > 0:
            model, base_url = model[:at], model[at + 1:]
            break
    opts = ProviderOptions(base_url, prices, concurrency, timeout_s, max_retries)
    if model.startswith("replay:"):
        if base_url:
            raise ConfigError("--base-url does not apply to replay:<path>; drop one of them")
        name, rest = "replay", model[len("replay:"):]
        if not rest:
            raise ConfigError("replay: needs a path, e.g. --model replay:runs/my_run")
    elif base_url:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"--base-url {base_url!r} is not an http(s) URL; e.g. http://localhost:8000/v1"
            )
        name, rest = "compatible", model
    else:
        name, sep, rest = model.partition("/")
        if not sep:
            raise ConfigError(
                f"--model {model!r} names no provider; write openai/{model} or "
                f"anthropic/{model}, or pass --base-url for an OpenAI-compatible server"
            )
        if name not in _REGISTRY or name in ("compatible", "replay"):
            raise ConfigError(f"unknown provider {name!r} in --model {model!r}; {_USAGE}")
    if not rest:
        raise ConfigError(f"--model {model!r} names no model; e.g. openai/gpt-4o")
    entry = _REGISTRY[name]
    if not entry.available:
        raise ConfigError(entry.hint or f"provider {name!r} is not available here")
    return entry.build(rest, opts)


# -- the built-in providers -------------------------------------------------------------
def _key(env: str, what: str) -> str:
    key = os.environ.get(env, "").strip()
    if not key:
        raise ConfigError(f"{env} is not set; export your {what} API key as {env}")
    return key


def _sdk_kw(o: ProviderOptions) -> dict[str, Any]:
    return {"prices": o.prices, "concurrency": o.concurrency, "timeout_s": o.timeout_s,
            "max_retries": o.max_retries}


def _openai(model: str, o: ProviderOptions) -> Provider:
    return OpenAIProvider(model, api_key=_key("OPENAI_API_KEY", "OpenAI"), **_sdk_kw(o))


def _compatible(model: str, o: ProviderOptions) -> Provider:
    key = os.environ.get("OPENAI_API_KEY", "").strip() or "EMPTY"  # local servers need none
    return CompatibleProvider(model, api_key=key, base_url=o.base_url, **_sdk_kw(o))


def _anthropic(model: str, o: ProviderOptions) -> Provider:
    token = os.environ.get("ANTHROPIC_AUTH_TOKEN", "").strip()
    if token and not os.environ.get("ANTHROPIC_API_KEY", "").strip():
        return AnthropicProvider(model, api_key=token, auth_token=True, **_sdk_kw(o))
    return AnthropicProvider(model, api_key=_key("ANTHROPIC_API_KEY", "Anthropic"), **_sdk_kw(o))


def _replay(path: str, o: ProviderOptions) -> Provider:
    return ReplayProvider(path, concurrency=o.concurrency)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


_HAS_OPENAI, _HAS_ANTHROPIC = _installed("openai"), _installed("anthropic")
register_provider("openai", _openai, available=_HAS_OPENAI,
                  hint="the openai package is not installed; pip install openai")
register_provider("compatible", _compatible, available=_HAS_OPENAI,
                  hint="OpenAI-compatible servers need the openai package; pip install openai")
register_provider("anthropic", _anthropic, available=_HAS_ANTHROPIC,
                  hint="the anthropic package is not installed; pip install anthropic")
register_provider("replay", _replay)
