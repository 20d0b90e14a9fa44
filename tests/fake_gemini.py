"""A local stand-in for the Gemini REST endpoint, for tests that must not touch the network.

The Gemini backend talks to Google through the ``google-genai`` SDK, so the only
honest way to test retries, timeouts and error handling is to let the SDK make
real HTTP requests.  :class:`FakeGemini` is a real HTTP server on 127.0.0.1 (a
random free port, ``http.server`` in a daemon thread) that answers
``POST /{version}/models/{model}:generateContent`` the way Google does, records
every request (path, headers, JSON body), and plays back a script of replies,
one per request.  Point the backend at it with ``base_url=server.url``.

Usage::

    def test_something(fake_gemini):
        fake_gemini.script(
            FakeGemini.error(429, "Resource has been exhausted"),
            FakeGemini.answer({"sentences": ["No pneumothorax."]}),
        )
        backend = GeminiBackend(api_key="k", base_url=fake_gemini.url)
        ...
        assert len(fake_gemini.requests) == 2

When the script runs out the server answers 500 with a message saying so, so a
test that makes more requests than it scripted fails loudly instead of hanging.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: gRPC status names Google puts in ``error.status`` for each HTTP code.
GRPC_STATUS: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass(frozen=True)
class Reply:
    """One scripted reply: an HTTP status, a body, and how long to wait before sending it."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json; charset=UTF-8"
    delay: float = 0.0

    def slow(self, delay: float) -> Reply:
        """The same reply, sent after ``delay`` seconds (longer than the client timeout)."""
        return Reply(self.status, self.body, self.content_type, delay)


@dataclass(frozen=True)
class RecordedRequest:
    """What the server received: method, path, headers (lower-case names), raw and JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    json: Any

    def prompt_text(self) -> str:
        """All text parts of the request's ``contents``, joined (what the model was asked)."""
        if not isinstance(self.json, dict):
            return ""
        texts = [
            part.get("text", "")
            for content in self.json.get("contents", [])
            for part in content.get("parts", [])
            if isinstance(part, dict)
        ]
        return "\n".join(texts)


@dataclass
class FakeGemini:
    """A scripted fake of the Gemini ``generateContent`` REST endpoint."""

    model_version: str = "gemini-fake-001"
    requests: list[RecordedRequest] = field(default_factory=list)
    _script: deque[Reply | Callable[[RecordedRequest], Reply]] = field(default_factory=deque)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- reply builders ------------------------------------------------------------

    @classmethod
    def text(cls, text: str, finish_reason: str = "STOP") -> Reply:
        """A 200 answer whose model text is ``text`` verbatim (e.g. malformed JSON)."""
        payload = {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": finish_reason,
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 100,
                "candidatesTokenCount": max(1, len(text) // 4),
                "totalTokenCount": 100 + max(1, len(text) // 4),
            },
            "modelVersion": "gemini-fake-001",
            "responseId": "fake-response",
        }
        return Reply(200, json.dumps(payload).encode())

    @classmethod
    def answer(cls, obj: Any) -> Reply:
        """A 200 answer whose model text is ``obj`` as JSON (what ``application/json`` gives)."""
        return cls.text(json.dumps(obj))

    @classmethod
    def sentences(cls, *sentences: str) -> Reply:
        """A ``single_entity`` answer: ``{"sentences": [...]}``."""
        return cls.answer({"sentences": list(sentences)})

    @classmethod
    def keep(cls, *indices: int) -> Reply:
        """A ``remove_entity`` answer: ``{"keep": [...]}``."""
        return cls.answer({"keep": list(indices)})

    @classmethod
    def adds_finding(
        cls, *sentences: str, extra: str = "There is a large right pneumothorax."
    ) -> Reply:
        """A ``single_entity`` answer that invents a finding, so validation must reject it."""
        return cls.answer({"sentences": [*sentences, extra]})

    @classmethod
    def malformed(cls) -> Reply:
        """A 200 answer whose model text is not valid JSON."""
        return cls.text('{"sentences": ["No pneumothorax.", ')

    @classmethod
    def error(cls, status: int, message: str, grpc_status: str | None = None) -> Reply:
        """An error reply with Google's error body ``{"error": {code, message, status}}``."""
        body = {
            "error": {
                "code": status,
                "message": message,
                "status": grpc_status or GRPC_STATUS.get(status, "UNKNOWN"),
            }
        }
        return Reply(status, json.dumps(body).encode())

    @classmethod
    def raw(cls, status: int, body: str, content_type: str = "text/html; charset=UTF-8") -> Reply:
        """Any HTTP body, e.g. a proxy's HTML page: not JSON at all."""
        return Reply(status, body.encode(), content_type)

    # -- scripting and inspection --------------------------------------------------

    def script(self, *replies: Reply | Callable[[RecordedRequest], Reply]) -> None:
        """Queue replies, one per coming request (a callable computes a reply from the request)."""
        with self._lock:
            self._script.extend(replies)

    @property
    def url(self) -> str:
        """The base URL to give the client (``http://127.0.0.1:PORT``)."""
        if self._server is None:
            raise RuntimeError("the fake server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def remaining(self) -> int:
        """How many scripted replies have not been used."""
        with self._lock:
            return len(self._script)

    def reset(self) -> None:
        """Forget recorded requests and any unused script."""
        with self._lock:
            self.requests.clear()
            self._script.clear()

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> FakeGemini:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                fake._handle(self)

            def do_GET(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._stopping.clear()
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},  # shutdown() waits up to one poll interval
            name="fake-gemini",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; slow replies still sleeping give up at once."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeGemini:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling ----------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = RecordedRequest(
            method=handler.command,
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            raw=raw,
            json=body,
        )
        with self._lock:
            self.requests.append(request)
            step = self._script.popleft() if self._script else None
        if step is None:
            reply = self.error(500, "fake_gemini: no scripted reply left for this request")
        elif callable(step):
            reply = step(request)
        else:
            reply = step
        if reply.delay:
            # Sleep in small steps so stop() does not wait for a long delay.
            deadline = time.monotonic() + reply.delay
            while time.monotonic() < deadline and not self._stopping.is_set():
                time.sleep(0.01)
        try:
            handler.send_response(reply.status, _reason(reply.status))
            handler.send_header("Content-Type", reply.content_type)
            handler.send_header("Content-Length", str(len(reply.body)))
            handler.end_headers()
            handler.wfile.write(reply.body)
            handler.wfile.flush()
        except OSError:
            pass  # the client timed out and hung up: expected for slow replies
        handler.close_connection = bool(reply.delay)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
