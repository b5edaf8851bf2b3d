"""The body of a denial, the same through every door."""

from __future__ import annotations

import json
from collections.abc import Mapping

from authz.errors import OUTCOMES, Reason

#: Longest x-request-id echoed in a denied body; longer ones are not echoed.
MAX_REQUEST_ID = 128


def echoed_request_id(headers: Mapping[str, str]) -> str | None:
    """The request's x-request-id, when short enough to echo in a denial."""
    value = headers.get("x-request-id")
    if value is None or len(value) > MAX_REQUEST_ID:
        return None
    return str(value)


def denied_body(reason: Reason, request_id: str | None) -> bytes:
    """The JSON body of a denial; it never echoes a credential or claim."""
    outcome = OUTCOMES[reason]
    return json.dumps(
        {"error": outcome.error, "reason": reason.value, "request_id": request_id},
        separators=(",", ":"),
    ).encode("utf-8")
