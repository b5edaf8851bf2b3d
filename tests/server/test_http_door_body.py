"""The HTTP door's application and request bodies: read (bounded) only for a
policy that reads one, and a body not read never decided as none
(docs/security.md 70)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from authz.config import load_policy
from authz.engine import SystemClock
from authz.server.http_door import HttpAuthzApp
from authz.server.service import CheckService, PolicyState
from authz.server.telemetry import Telemetry
from authz.wire.grpc import GRPC
from authz.wire.http import HttpDoor, HttpDoorSettings

READS_BODY = """\
version: 1
body: {max_bytes: 64}
rules:
  - {name: small, effect: allow, anonymous: true, methods: [POST], when: 'request.body_json.n < 10'}
"""
NO_BODY = "version: 1\nrules:\n  - {name: all, effect: allow, anonymous: true}\n"


def _call(policy_text: str, tmp: Path, body: bytes) -> tuple[int, dict[str, Any], int]:
    """(status, JSON body or {}, receive() calls) of one call carrying ``body``."""
    path = tmp / "policy.yaml"
    path.write_text(policy_text)
    door = HttpDoor(HttpDoorSettings(prefix="/authz"))
    service = CheckService(PolicyState(load_policy(str(path)), SystemClock(), doors=(GRPC, door)), Telemetry())
    app = HttpAuthzApp(lambda: service, door, 10)
    scope = {"type": "http", "method": "POST", "raw_path": b"/authz/api", "query_string": b"",
             "headers": [(b"host", b"api.example.com"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    chunks = [body[i:i + 16] for i in range(0, len(body), 16)] or [b""]
    sent: list[dict[str, Any]] = []
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": chunks[received - 1], "more_body": received < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = sent[0]["status"]
    text = sent[1]["body"]
    return status, json.loads(text) if text else {}, received


def test_sec_70_the_door_reads_the_body_a_policy_reads(tmp_path: Path) -> None:
    assert _call(READS_BODY, tmp_path, b'{"n": 1, "pad": "................"}')[0] == 200
    status, document, _ = _call(READS_BODY, tmp_path, b'{"n": 50}')
    assert (status, document["reason"]) == (401, "missing_credential")
    status, document, received = _call(READS_BODY, tmp_path, b'{"n": 1, "pad": "' + b"x" * 200 + b'"}')
    assert (status, document["reason"]) == (413, "body_too_large")
    assert received <= 6  # at most max_bytes + 1 bytes read (16-byte chunks), never the whole body


def test_a_policy_that_reads_no_body_leaves_it_unread(tmp_path: Path) -> None:
    status, _document, received = _call(NO_BODY, tmp_path, b'{"n": 1}' * 100)
    assert (status, received) == (200, 0)
