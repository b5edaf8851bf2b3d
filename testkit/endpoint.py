"""A JSON endpoint on 127.0.0.1 that misbehaves on demand: an RFC 7662
introspection endpoint or a data source for the outside-call tests.

Every request (GET or POST) is recorded (path, query, headers, body) and
answered by ``answer(request) -> (status, json)``, unless ``mode`` says
otherwise: ``500``, ``garbage`` (not JSON), ``huge`` (past any bound),
``hang`` (no answer until the test ends), ``gate`` (answers once ``gate``
is set: a slow endpoint the test releases), ``drop`` (closes unanswered).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


class Endpoint:
    def __init__(self, answer: Callable[[Seen], tuple[int, Any]] | None = None) -> None:
        self.answer = answer or (lambda seen: (200, {}))
        self.mode = "ok"
        self.seen: list[Seen] = []
        self.gate = threading.Event()
        self._release = threading.Event()
        self._changed = threading.Condition()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle's
            # algorithm and the client's delayed ACK add 40 ms to each answer.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                seen = Seen(self.command, parts.path, parse_qs(parts.query),
                            {k.lower(): v for k, v in self.headers.items()}, body)
                with endpoint._changed:
                    endpoint.seen.append(seen)
                    endpoint._changed.notify_all()
                mode = endpoint.mode
                if mode == "hang":
                    endpoint._release.wait(30)
                    return
                if mode == "drop":
                    self.close_connection = True
                    return
                if mode == "gate":
                    endpoint.gate.wait(30)
                if mode == "500":
                    self._send(500, b'{"error": "server_error"}')
                elif mode == "garbage":
                    self._send(200, b"<html>not json</html>")
                elif mode == "huge":
                    self._send(200, b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}')
                else:
                    status, value = endpoint.answer(seen)  # bytes: the body as is, else JSON
                    self._send(status, value if isinstance(value, bytes) else json.dumps(value).encode())

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Endpoint:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()

    def count(self, path: str | None = None) -> int:
        with self._changed:
            return sum(1 for s in self.seen if path is None or s.path == path)

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Until ``count`` requests have arrived (a condition, not a sleep)."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.seen) >= count, timeout)
