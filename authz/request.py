"""The transport-free view of one authorization request."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

_EMPTY: Mapping[str, str] = MappingProxyType({})


class Request(NamedTuple):
    """What the decision core sees of an Envoy CheckRequest.

    ``headers`` has lower-case names; Envoy joins repeated headers with ','.
    ``path`` is the request target as sent (path and query).

    An immutable record (a named tuple: one is built per request, and a
    frozen dataclass costs three times as much to build).
    """

    method: str
    path: str
    host: str = ""
    scheme: str = "http"
    headers: Mapping[str, str] = _EMPTY
    source_address: str = ""
    source_port: int = 0
    source_principal: str = ""
    destination_address: str = ""
    destination_port: int = 0
    destination_principal: str = ""
    context: Mapping[str, str] = _EMPTY

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id")
