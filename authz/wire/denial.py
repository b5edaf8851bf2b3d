"""The body of a denial, the same through every door."""

from __future__ import annotations

import json

from authz.errors import OUTCOMES, Reason


def denied_body(reason: Reason, request_id: str | None) -> bytes:
    """The JSON body of a denial; it never echoes a credential or claim."""
    outcome = OUTCOMES[reason]
    return json.dumps(
        {"error": outcome.error, "reason": reason.value, "request_id": request_id},
        separators=(",", ":"),
    ).encode("utf-8")
