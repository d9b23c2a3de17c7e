"""Secrets out of text: the one scrubber for provider error messages and stored LLM calls.

Example:
    >>> redact("401: key sk-proj-abc123def456 rejected; header Bearer abcdefghijklmnop1234")
    '401: key [redacted] rejected; header [redacted]'
    >>> redact_obj({"api_key": "x", "usage": {"n": 1}, "msg": ["token sk-0123456789"]})
    {'usage': {'n': 1}, 'msg': ['token [redacted]']}
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "redact", "redact_obj"]

REDACTED = "[redacted]"

# Keys whose values are credentials by name (dropped with their values from structures).
_SECRET_KEYS = frozenset({
    "authorization", "proxy-authorization", "headers", "api_key", "api-key", "apikey",
    "x-api-key", "openai-api-key", "anthropic-api-key", "password", "secret",
})
# Environment variables whose values are secrets wherever they appear.
_SECRET_ENV = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)
# Key-shaped strings: OpenAI/Anthropic keys (also the masked ``sk-proj-****abcd`` that error
# messages echo) and bearer tokens.
_SECRET_TEXT = re.compile(r"\bsk-[A-Za-z0-9_\-*]{6,}|\bBearer\s+[A-Za-z0-9._\-]{16,}")


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with ``secrets``, the values of secret-named environment variables (8+
    characters) and key-shaped strings replaced by ``[redacted]``."""
    values = [s for s in secrets if s]
    values += [v for k, v in os.environ.items() if len(v) >= 8 and _SECRET_ENV.search(k)]
    for v in sorted(set(values), key=len, reverse=True):  # longest first: no partial leftovers
        text = text.replace(v, REDACTED)
    return _SECRET_TEXT.sub(REDACTED, text)


def redact_obj(x: Any) -> Any:
    """JSON-like ``x`` without header- or key-named entries, every string :func:`redact`-ed."""
    if isinstance(x, str):
        return redact(x)
    if isinstance(x, Mapping):
        return {k: redact_obj(v) for k, v in x.items() if str(k).lower() not in _SECRET_KEYS}
    if isinstance(x, (list, tuple)):
        return [redact_obj(v) for v in x]
    return x
