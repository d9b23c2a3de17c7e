"""A scriptable fake LLM server on 127.0.0.1 for tests: OpenAI chat completions and
Anthropic messages, enough of each wire format for the official SDKs.

Each test scripts a queue of replies; every request pops one (an empty queue answers 500
"script exhausted", so a test that makes more calls than it meant to fails loudly). The
server lives on an ephemeral port, answers at most ``max_requests`` requests, and stops by
itself after ``lifetime_s`` if a test forgets to stop it.

    def test_x(llm_server):
        llm_server.script(rate_limited(), Reply("```python\\nclass ModelNew: ...\\n```"))
        ...  # point an SDK at llm_server.openai_url (OpenAI) or llm_server.url (Anthropic)
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = [
    "Reply",
    "Recorded",
    "FakeLLMServer",
    "rate_limited",
    "server_error",
    "truncated",
    "no_code",
    "llm_server_fixture",
    "CODE_REPLY",
]

CODE_REPLY = (
    "Here is the kernel.\n\n```python\nimport torch\nimport torch.nn as nn\n\n"
    "class ModelNew(nn.Module):\n    def forward(self, x):\n        return x\n```\n"
)


@dataclass
class Reply:
    """One scripted answer. ``text`` as a list gives several choices (OpenAI ``n``)."""

    text: str | list[str] = CODE_REPLY
    status: int = 200
    finish: str = "stop"  # "stop" or "length"; rendered in each API's own words
    usage: tuple[int, int] | None = (120, 80)  # (prompt, completion) tokens; None: omitted
    headers: dict[str, str] = field(default_factory=dict)
    message: str = ""  # error message; "{key}" is replaced by the key the client sent
    delay_s: float = 0.0
    model: str | None = None  # the model the server says answered (default: as asked)


def rate_limited() -> Reply:
    # retry-after: 0 is what servers send; the SDKs prefer retry-after-ms, which keeps the
    # retry in the milliseconds (retry-after: 0 alone falls back to a 0.5 s backoff).
    return Reply(status=429, message="Rate limit reached", headers={
        "retry-after": "0", "retry-after-ms": "1"})


def server_error(status: int = 500) -> Reply:
    return Reply(status=status, message="The server had an error", headers={"retry-after-ms": "1"})


def truncated() -> Reply:
    return Reply("```python\nimport torch\nclass ModelNew(torch.nn.Module):\n    def forw",
                 finish="length", usage=(120, 4096))


def no_code() -> Reply:
    return Reply("I am sorry, I cannot write that kernel.")


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any


class FakeLLMServer:
    """The server. ``url`` for Anthropic's base URL, ``openai_url`` (``url`` + /v1) for OpenAI's."""

    def __init__(self, lifetime_s: float = 60.0, max_requests: int = 500,
                 models: tuple[str, ...] = ("gpt-4o", "claude-opus-4-5", "fake-model")):
        self.lifetime_s = lifetime_s
        self.max_requests = max_requests
        self.models = list(models)
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0  # the most completion requests handled at once
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True
        self._stopped = False

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_url(self) -> str:
        return self.url + "/v1"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def calls(self, suffix: str) -> list[Recorded]:
        """Recorded requests whose path ends with ``suffix`` (e.g. "/chat/completions")."""
        return [r for r in self.requests if r.path.endswith(suffix)]

    def start(self) -> FakeLLMServer:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling -----------------------------------------------------------------
    def _next(self) -> Reply:
        with self._lock:
            if len(self.requests) > self.max_requests:
                return Reply(status=503, message="fake server request limit reached",
                             headers={"x-should-retry": "false"})
            if self._queue:
                return self._queue.popleft()
        return Reply(status=500, message="script exhausted", headers={"x-should-retry": "false"})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # idle keep-alive connections close by themselves

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server._record(self, None)
                path = self.path.split("?")[0]
                if path.endswith("/models"):
                    data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake",
                             "type": "model", "display_name": m,
                             "created_at": "2025-01-01T00:00:00Z"} for m in server.models]
                    return self._send(200, {"object": "list", "data": data, "has_more": False,
                                            "first_id": None, "last_id": None})
                if "/models/" in path:
                    mid = path.rsplit("/", 1)[1]
                    if mid in server.models:
                        return self._send(200, {"id": mid, "type": "model", "display_name": mid,
                                                "created_at": "2025-01-01T00:00:00Z"})
                    return self._send(404, _error(path, f"model: {mid}", "not_found_error"))
                self._send(404, _error(path, "no such route", "not_found_error"))

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = None
                server._record(self, body)
                path = self.path.split("?")[0]
                if not path.endswith(("/chat/completions", "/messages")):
                    return self._send(404, _error(path, "no such route", "not_found_error"))
                reply = server._next()
                server._enter(+1)
                try:
                    if reply.delay_s:
                        time.sleep(reply.delay_s)
                finally:
                    server._enter(-1)
                if reply.status != 200:
                    key = self.headers.get("x-api-key") or (
                        self.headers.get("authorization") or "").removeprefix("Bearer ")
                    msg = reply.message.replace("{key}", key)
                    return self._send(reply.status, _error(path, msg, _err_type(reply.status)),
                                      reply.headers)
                self._send(200, _render(path, reply, body or {}), reply.headers)

            def _send(self, status: int, payload: dict[str, Any],
                      headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def _enter(self, d: int) -> None:
        with self._lock:
            self.in_flight += d
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _record(self, h: BaseHTTPRequestHandler, body: Any) -> None:
        with self._lock:
            headers = {k.lower(): v for k, v in h.headers.items()}
            self.requests.append(Recorded(h.command, h.path, headers, body))


def _err_type(status: int) -> str:
    return {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 429: "rate_limit_error"}.get(status, "api_error")


def _error(path: str, message: str, etype: str) -> dict[str, Any]:
    if path.endswith("/chat/completions"):
        return {"error": {"message": message, "type": etype, "code": None, "param": None}}
    return {"type": "error", "error": {"type": etype, "message": message}}


def _render(path: str, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
    texts = reply.text if isinstance(reply.text, list) else [reply.text]
    model = reply.model or body.get("model") or "fake-model"
    p, c = reply.usage or (0, 0)
    if path.endswith("/chat/completions"):
        out: dict[str, Any] = {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": t},
                         "finish_reason": reply.finish, "logprobs": None}
                        for i, t in enumerate(texts)],
        }
        if reply.usage is not None:
            out["usage"] = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        return out
    stop = {"stop": "end_turn", "length": "max_tokens"}.get(reply.finish, reply.finish)
    return {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": texts[0]}], "stop_reason": stop,
        "stop_sequence": None, "usage": {"input_tokens": p, "output_tokens": c},
    }


@pytest.fixture(name="llm_server")
def llm_server_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLMServer]:
    """``llm_server``: a started fake server, stopped at the end of the test. Import
    ``llm_server_fixture`` into a test module to use it."""
    for var in ("NO_PROXY", "no_proxy"):  # an HTTP(S)_PROXY in the environment must not apply
        monkeypatch.setenv(var, ",".join(filter(None, ["127.0.0.1", os.environ.get(var)])))
    with FakeLLMServer() as server:
        yield server
