"""A local HTTP server speaking OpenAI chat completions, with answers scripted by the test.

It is a real server on 127.0.0.1 (a thread), so the official `openai` client goes through its
whole HTTP path: status codes, Retry-After headers, slow replies that hit the client's timeout,
keep-alive connections. Replies come from a FIFO of queued `FakeReply`s first, then from the
`respond(body)` function, which may return a `FakeReply` or just the answer text.

    with FakeOpenAIServer(respond=lambda body: "Hello") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x")
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ERROR_TYPES = {401: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_error"}


@dataclass
class FakeReply:
    """One scripted reply."""

    text: str | None = "OK"
    status: int = 200
    delay_s: float = 0.0
    """Extra seconds before replying (beyond the server's latency), e.g. to exceed a timeout."""
    headers: dict[str, str] = field(default_factory=dict)
    prompt_tokens: int | None = None
    """Reported usage; None counts roughly one token per four characters."""
    completion_tokens: int | None = None
    body: bytes | None = None
    """Sent as the whole HTTP body instead of a completion (malformed JSON, a wrong shape)."""


def _default_respond(body: dict[str, Any]) -> str:
    return "echo: " + str(body["messages"][-1]["content"])


class FakeOpenAIServer:
    """OpenAI-protocol server for tests; see the module docstring."""

    def __init__(
        self,
        respond: Callable[[dict[str, Any]], FakeReply | str] | None = None,
        *,
        latency_s: float = 0.0,
        api_key: str | None = None,
    ):
        self.respond = respond or _default_respond
        self.latency_s = latency_s
        self.api_key = api_key
        """When set, requests without `Authorization: Bearer <api_key>` get 401."""
        self.received: list[dict[str, Any]] = []
        """Bodies of the chat requests received, in arrival order (401s included)."""
        self.max_in_flight = 0
        self._in_flight = 0
        self._queue: deque[FakeReply] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.received)

    def push(self, *replies: FakeReply) -> None:
        """Queue replies served (in order) before `respond` is consulted again."""
        with self._lock:
            self._queue.extend(replies)

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # wakes handlers sleeping on a delay
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _reply_for(self, body: dict[str, Any], authorization: str | None) -> FakeReply:
        with self._lock:
            self.received.append(body)
            if self.api_key is not None and authorization != f"Bearer {self.api_key}":
                return FakeReply(text="Incorrect API key provided.", status=401)
            if self._queue:
                return self._queue.popleft()
        reply = self.respond(body)
        return FakeReply(text=reply) if isinstance(reply, str) else reply

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep test output clean

            def do_POST(self) -> None:  # noqa: N802
                if server._closing.is_set():  # stopped: drop kept-alive connections too
                    self.close_connection = True
                    return
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}}, {})
                    return
                with server._lock:
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    reply = server._reply_for(body, self.headers.get("Authorization"))
                    if server._closing.wait(server.latency_s + reply.delay_s):
                        self.close_connection = True
                        return
                finally:
                    with server._lock:
                        server._in_flight -= 1
                if reply.status != 200:
                    error = {
                        "message": reply.text or f"error {reply.status}",
                        "type": ERROR_TYPES.get(reply.status, "server_error"),
                        "code": None,
                    }
                    self._send(reply.status, {"error": error}, reply.headers)
                    return
                if reply.body is not None:
                    self._send_bytes(200, reply.body, reply.headers)
                    return
                self._send(200, self._completion(body, reply), reply.headers)

            def _completion(self, body: dict[str, Any], reply: FakeReply) -> dict[str, Any]:
                prompt_chars = sum(len(str(m.get("content", ""))) for m in body["messages"])
                prompt_tokens = reply.prompt_tokens
                completion_tokens = reply.completion_tokens
                return {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "fake"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply.text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_chars // 4
                        if prompt_tokens is None
                        else prompt_tokens,
                        "completion_tokens": len(reply.text or "") // 4
                        if completion_tokens is None
                        else completion_tokens,
                        "total_tokens": 0,
                    },
                }

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
                self._send_bytes(status, json.dumps(payload).encode(), headers)

            def _send_bytes(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout) before the reply was ready

        return Handler
