"""The HTTP door served in a worker process: granian, embedded on its own
event loop thread, answers Envoy's HTTP ext_authz calls through the same
:class:`authz.server.service.CheckService` (policy, decision and token
caches, metrics, logs, traces) as the worker's gRPC server.

granian binds ``--http-authz-address`` with SO_REUSEPORT, so every worker
listens on the same port and the kernel spreads Envoy's connections over
them. It runs the ASGI interface (see :mod:`authz.wire.http` for why), on a
uvloop event loop, as the worker's own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.server.embed import Server

from authz.server.service import CheckService, Pending
from authz.wire.http import HttpDoor
from authz.wire.http_call import InvalidCall, read_body

log = logging.getLogger("authz.http_door")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class HttpAuthzApp:
    """The ASGI application: one Check per call, never an exception to granian.

    At most ``max_in_flight`` calls are decided at once (``authz serve
    --max-concurrent-checks``, as the gRPC door's limit); a call beyond it
    is refused at once with a 503, which Envoy counts as an error of its
    authorization server and turns into its ``status_on_error`` (403), as
    it does the gRPC door's RESOURCE_EXHAUSTED. Calls are decided on one
    event loop, so those in flight together are the ones waiting for a key
    set; they wait at most ``DEFAULT_WAIT``, and within the call's timeout
    (``x-envoy-expected-rq-timeout-ms``)."""

    def __init__(self, service: Callable[[], CheckService | None], door: HttpDoor, max_in_flight: int) -> None:
        self.service = service
        self.door = door
        self.max_in_flight = max_in_flight
        self.in_flight = 0  # touched only on the event loop's thread

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        service = self.service()
        if service is None:
            status, headers, body = 503, _TEXT, b"no policy loaded\n"
        elif self.in_flight >= self.max_in_flight:
            status, headers, body = 503, _TEXT, b"overloaded\n"
        else:
            call: Any = scope
            policy = service.state.policy
            if policy.reads.body:  # read the body Envoy passes on (with_request_body); else left unread
                try:
                    parsed = self.door.parse(scope)
                    if parsed.body is None:
                        await read_body(parsed, receive, policy.body.max_bytes)
                    call = parsed
                except InvalidCall:
                    call = scope  # check_now parses it again and refuses it, counted and logged
            answer = service.check_now(self.door, call)  # a cache hit is answered without a coroutine
            if answer.__class__ is Pending:
                self.in_flight += 1
                try:
                    answer = await service.check_later(answer)
                finally:
                    self.in_flight -= 1
            status, headers, body = answer
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


_TEXT = [(b"content-type", b"text/plain")]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop (a dependency everywhere but Windows), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class HttpDoorServer:
    """granian on a thread of its own: start, then stop (draining)."""

    def __init__(self, app: HttpAuthzApp, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._server = Server(app, address=host.strip("[]") or "0.0.0.0", port=int(port), interface=Interfaces.ASGINL,
                              http=HTTPModes.auto, websockets=False, log_enabled=False, backlog=1024)
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name="authz-http-door", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._server.serve())
        except Exception:
            log.exception("the HTTP door stopped")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop accepting, let calls in flight finish (granian drains), and
        wait for the thread, at most ``timeout`` seconds."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._server.stop)
            self._thread.join(timeout)
