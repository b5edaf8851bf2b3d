"""Building core Requests and Envoy CheckRequests for tests."""

from __future__ import annotations

import base64
import json
from typing import Any

from authz.request import Request
from testkit.paths import ACCEPTANCE


def request(
    method: str = "GET",
    path: str = "/api/orders",
    *,
    host: str = "api.example.com",
    headers: dict[str, str] | None = None,
    bearer: str | None = None,
    source: str = "198.51.100.7",
    principal: str = "",
    context: dict[str, str] | None = None,
    body: bytes = b"",
) -> Request:
    all_headers = {":authority": host, ":method": method, ":path": path, "x-request-id": "req-1"}
    if bearer is not None:
        all_headers["authorization"] = f"Bearer {bearer}"
    all_headers.update(headers or {})
    return Request(
        method=method, path=path, host=host, scheme="https", headers=all_headers,
        source_address=source, source_port=40000, source_principal=principal,
        destination_address="10.0.0.12", destination_port=8080,
        context=context or {}, body=body,
    )


def check_request_json(
    method: str = "GET", path: str = "/api/orders", *, headers: dict[str, str] | None = None,
    source: str = "198.51.100.7", principal: str = "", context: dict[str, str] | None = None,
    host: str = "api.example.com", body: bytes | None = None,
) -> dict[str, Any]:
    """A CheckRequest in protobuf JSON, shaped like the contract fixtures;
    ``body`` as Envoy passes it with ``pack_as_bytes`` (``raw_body``)."""
    all_headers = {":authority": host, ":method": method, ":path": path, ":scheme": "https", "x-request-id": "req-1"}
    all_headers.update(headers or {})
    source_obj: dict[str, Any] = {"address": {"socketAddress": {"address": source, "portValue": 40000}}}
    if principal:
        source_obj["principal"] = principal
    http: dict[str, Any] = {"id": "1", "method": method, "headers": all_headers, "path": path,
                            "host": host, "scheme": "https", "protocol": "HTTP/1.1"}
    if body is not None:
        http["rawBody"] = base64.b64encode(body).decode("ascii")
    return {
        "attributes": {
            "source": source_obj,
            "destination": {"address": {"socketAddress": {"address": "10.0.0.12", "portValue": 8080}}},
            "request": {"http": http},
            "contextExtensions": context or {},
        }
    }


def contract_case(name: str) -> dict[str, Any]:
    return dict(json.loads((ACCEPTANCE / name).read_text()))
