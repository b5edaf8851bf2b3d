"""The transport-free view of one authorization request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Request:
    """What the decision core sees of an Envoy CheckRequest.

    ``headers`` has lower-case names; Envoy joins repeated headers with ','.
    ``path`` is the request target as sent (path and query).
    """

    method: str
    path: str
    host: str = ""
    scheme: str = "http"
    headers: Mapping[str, str] = field(default_factory=dict)
    source_address: str = ""
    source_port: int = 0
    source_principal: str = ""
    destination_address: str = ""
    destination_port: int = 0
    destination_principal: str = ""
    context: Mapping[str, str] = field(default_factory=dict)

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id")
