"""What a decision says back, the same through every door: the one renderer.

A :class:`authz.decision.Decision` names its outcome; :func:`render` turns it
into a :class:`Reply` (status, headers for the upstream and for the client,
body, dynamic metadata), and each door only encodes that reply on its wire
(:mod:`authz.wire.grpc`, :mod:`authz.wire.http`). What a 401, a 403 and a
policy's own denial (``deny_with``, :mod:`authz.denials`) look like is
decided here and nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from authz.decision import Decision
from authz.errors import OUTCOMES, Reason

#: Longest x-request-id echoed in a denial; longer ones are not echoed.
MAX_REQUEST_ID = 128
JSON = "application/json"


class Reply(NamedTuple):
    """One decision as the wire carries it. On allow: ``upstream`` headers
    (each replacing the client's copy), ``remove`` and ``client`` headers
    (each added beside the upstream's answer). On deny: ``status`` and
    ``client`` headers (each replacing any other) and ``body``, sent to the
    client instead of the upstream's answer."""

    allowed: bool
    status: int
    grpc_code: int
    #: The reason code (the gRPC status message of a denial).
    message: str
    upstream: tuple[tuple[str, str], ...]
    remove: tuple[str, ...]
    client: tuple[tuple[str, str], ...]
    body: bytes
    metadata: dict[str, Any]


def echoed_request_id(headers: Mapping[str, str]) -> str | None:
    """The request's x-request-id, when short enough to echo in a denial."""
    value = headers.get("x-request-id")
    if value is None or len(value) > MAX_REQUEST_ID:
        return None
    return str(value)


def denied_body(reason: Reason, request_id: str | None) -> bytes:
    """The default JSON body of a denial; it never echoes a credential or claim."""
    return json.dumps(
        {"error": OUTCOMES[reason].error, "reason": reason.value, "request_id": request_id},
        separators=(",", ":"),
    ).encode("utf-8")


def render(decision: Decision, request_id: str | None) -> Reply:
    """The reply to ``decision``; ``request_id`` is the request's echoed
    x-request-id (:func:`echoed_request_id`), which a denial's body names.

    A denial is the policy's own when the decision carries one
    (``Decision.denial``), else the reason's: its status, ``no-store``, the
    RFC 6750 challenge of a 401 and the JSON body. A custom 401 keeps the
    challenge."""
    metadata = decision.envoy_metadata()
    reason = decision.reason
    outcome = OUTCOMES[reason]
    if decision.allowed:
        return Reply(True, 200, outcome.grpc_code, reason.value, decision.headers, decision.remove,
                     decision.client_headers, b"", metadata)
    denial = decision.denial
    if denial is None:
        status, content_type, body = outcome.http_status, JSON, denied_body(reason, request_id)
        extra: tuple[tuple[str, str], ...] = ()
    else:
        status, extra = denial.status, denial.headers(request_id)
        custom = denial.body(request_id)
        content_type, body = (JSON, denied_body(reason, request_id)) if custom is None else \
            (denial.content_type or JSON, custom)
    client = [("content-type", content_type), ("cache-control", "no-store")]
    if status == 401 and outcome.challenge is not None:
        client.append(("www-authenticate", outcome.challenge))
    return Reply(False, status, outcome.grpc_code, reason.value, (), (), (*client, *extra), body, metadata)
