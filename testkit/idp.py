"""A real OIDC provider stand-in on 127.0.0.1 that misbehaves on demand.

Serves ``/.well-known/openid-configuration`` and ``/jwks`` over HTTP from a
thread, counts every request per path, and can answer 500/404, HTML, ``{}``,
a 10 MB body, hang until the test ends, or drop the connection unanswered
(a provider that is down).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HUGE = 10 * 1024 * 1024


class FakeIdP:
    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.mode = "ok"  # for /jwks: ok | 500 | 404 | html | empty-object | huge | hang | gate | drop
        self.discovery_mode = "ok"  # for discovery: ok | 500 | html | hang
        self.discovery_issuer: str | None = None  # override the discovery "issuer"
        self.hits: Counter[str] = Counter()
        self._release = threading.Event()
        self.gate = threading.Event()  # mode "gate": /jwks answers normally once this is set
        self.redirect_to: str | None = None  # where /moved redirects (default: /jwks)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        idp = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                with idp._changed:
                    idp.hits[path] += 1
                    idp._changed.notify_all()
                mode = idp.discovery_mode if path == "/.well-known/openid-configuration" else idp.mode
                if mode == "hang":
                    idp._release.wait(30)
                    return
                if mode == "drop":  # down: the connection closes with no answer
                    self.close_connection = True
                    return
                if mode == "gate":
                    idp.gate.wait(30)
                    mode = "ok"
                if path == "/.well-known/openid-configuration":
                    body = {"issuer": idp.discovery_issuer or idp.issuer, "jwks_uri": idp.url + "/jwks",
                            "authorization_endpoint": idp.url + "/authorize", "token_endpoint": idp.url + "/token",
                            "id_token_signing_alg_values_supported": ["RS256", "ES256"]}
                    if mode == "ok":
                        self._send(200, json.dumps(body).encode(), "application/json")
                    elif mode == "html":
                        self._send(200, b"<html></html>", "text/html")
                    else:
                        self._send(500, b"error", "text/plain")
                    return
                if path == "/moved":  # a redirect to the key set, or wherever redirect_to says
                    self.send_response(302)
                    self.send_header("location", idp.redirect_to or "/jwks")
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if path != "/jwks":
                    self._send(404, b"not found", "text/plain")
                    return
                if mode == "500":
                    self._send(500, b'{"error":"boom"}', "application/json")
                elif mode == "404":
                    self._send(404, b"not found", "text/plain")
                elif mode == "html":
                    self._send(200, b"<html><body>login</body></html>", "text/html")
                elif mode == "empty-object":
                    self._send(200, b"{}", "application/json")
                elif mode == "huge":
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(HUGE))
                    self.end_headers()
                    chunk = b" " * 65536
                    try:
                        for _ in range(HUGE // len(chunk)):
                            self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                else:
                    self._send(200, json.dumps(idp.jwks).encode(), "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.issuer = self.url
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeIdP:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def jwks_fetches(self) -> int:
        return self.hits["/jwks"]

    def wait_for_hits(self, path: str, count: int, timeout: float = 10.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.hits[path] >= count, timeout)


def remote_issuer_policy(idp: FakeIdP, *, name: str = "remote", issuer_lines: str = "", rest: str = "") -> str:
    """A policy with one issuer, ``name``, whose key set comes from ``idp``
    (RS256, roles from the ``groups`` claim), an ``orders-reader`` role for
    GET /api/**, more lines of the issuer (``issuer_lines``, four-space
    indented) and more top-level sections (``rest``)."""
    return f"""version: 1
issuers:
  - name: {name}
    issuer: {idp.issuer}
    audiences: [orders-api]
    jwks_uri: {idp.url}/jwks
    algorithms: [RS256]
    roles_claim: groups
{issuer_lines}roles:
  orders-reader: [{{methods: [GET], paths: ["/api/**"]}}]
{rest}"""


def slow_issuer_policy(idp: FakeIdP, rules: str = "") -> str:
    """A policy with one issuer, ``slow``, whose key set comes from ``idp``
    (with ``idp.mode = "gate"``, only when ``idp.gate`` opens; a fetch may
    take 20 s), a ``reader`` role for GET /api/**, and the ``rules:`` lines
    given (YAML list items, two-space indented)."""
    text = f"""version: 1
issuers:
  - name: slow
    issuer: {idp.issuer}
    audiences: [orders-api]
    jwks_uri: {idp.url}/jwks
    algorithms: [RS256]
    jwks: {{fetch_timeout: 20s}}
roles:
  reader: [{{methods: [GET], paths: ["/api/**"]}}]
"""
    return text + (f"rules:\n{rules}" if rules else "")
