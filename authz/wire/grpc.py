"""Conversion between Envoy's ext_authz messages and the decision core.

The only module that touches Envoy's protobuf types (``authz._proto``,
generated at build time from the .proto files in ``protos/vendor/``, see
protos/README.md): ``to_request`` turns a CheckRequest into a
:class:`Request` once, and ``to_response`` turns a :class:`Decision` into a
CheckResponse. Neither imports gRPC, so ``authz check`` uses them offline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from typing import Any

from google.protobuf import json_format

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from authz.decision import Decision
from authz.errors import OUTCOMES, Reason
from authz.policy import Reads
from authz.request import Request
from authz.wire.denial import denied_body

CheckRequest = external_auth_pb2.CheckRequest
CheckResponse = external_auth_pb2.CheckResponse
#: The gRPC service authz implements, as registered in the default descriptor
#: pool (by importing external_auth_pb2), where server reflection finds it.
AUTHORIZATION_SERVICE: str = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name

#: Longest x-request-id echoed in a denied body; longer ones are not echoed.
MAX_REQUEST_ID = 128
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def parse_json_request(text: str) -> Any:
    """A CheckRequest from its protobuf JSON mapping (raises ``ParseError``)."""
    return json_format.Parse(text, CheckRequest())


def to_request(check: Any) -> Request:
    """The core's view of a CheckRequest. Headers Envoy sent as raw bytes
    (``header_map``) must be valid UTF-8 (UnicodeDecodeError otherwise)."""
    attributes = check.attributes
    http = attributes.request.http
    # Header names are taken as sent: Envoy lower-cases them (HTTP/2 requires
    # it), and the decision cache key reads them the same way.
    headers: dict[str, str]
    if http.headers:
        headers = dict(http.headers)
    else:
        headers = {}
        for entry in http.header_map.headers:
            value = entry.value or entry.raw_value.decode("utf-8")
            key = entry.key
            headers[key] = f"{headers[key]},{value}" if key in headers else value
    source = attributes.source
    destination = attributes.destination
    return Request(
        method=http.method or headers.get(":method", ""),
        path=http.path or headers.get(":path", ""),
        host=http.host or headers.get(":authority", ""),
        scheme=http.scheme or headers.get(":scheme", ""),
        headers=headers,
        source_address=source.address.socket_address.address,
        source_port=source.address.socket_address.port_value,
        source_principal=source.principal,
        destination_address=destination.address.socket_address.address,
        destination_port=destination.address.socket_address.port_value,
        destination_principal=destination.principal,
        context=dict(attributes.context_extensions),
    )


def request_id_of(request: Request) -> str | None:
    value = request.headers.get("x-request-id")
    if value is None or len(value) > MAX_REQUEST_ID:
        return None
    return value


def _add_headers(options: Any, headers: Any) -> None:
    """Append (name, value) pairs to a repeated HeaderValueOption field, each
    overwriting what the request carries. Filling fields in place costs half
    of constructing the same messages from keyword arguments."""
    for name, value in headers:
        option = options.add()
        header = option.header
        header.key = name
        header.value = value
        option.append.value = False
        option.append_action = _OVERWRITE


def to_response(decision: Decision, request_id: str | None) -> Any:
    """The CheckResponse for a decision. Never empty: an empty response
    means allow to Envoy, so every response carries an explicit status."""
    if decision.allowed:
        response = CheckResponse()
        response.status.code = 0  # present, though zero
        ok = response.ok_response
        _add_headers(ok.headers, decision.headers)
        ok.headers_to_remove.extend(decision.remove)
        return response
    return denied_response(decision.reason, request_id)


_DENIED_HEADERS = (("content-type", "application/json"), ("cache-control", "no-store"))


def denied_response(reason: Reason, request_id: str | None) -> Any:
    outcome = OUTCOMES[reason]
    response = CheckResponse()
    response.status.code = outcome.grpc_code
    response.status.message = reason.value
    denied = response.denied_response
    # envoy.type.v3.StatusCode's numbers are the HTTP status codes themselves.
    denied.status.code = outcome.http_status  # type: ignore[assignment]
    _add_headers(denied.headers, _DENIED_HEADERS)
    if outcome.challenge is not None:
        _add_headers(denied.headers, (("www-authenticate", outcome.challenge),))
    denied.body = denied_body(reason, request_id).decode("utf-8")
    return response


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=20).digest()


def make_cache_key(reads: Reads, credential_headers: tuple[str, ...]) -> Callable[[Any], Hashable | None]:
    """A function from CheckRequest to the decision-cache key: a 160-bit
    BLAKE2b digest over the credential headers and exactly the attributes
    the policy reads (the path always; without its query unless a rule reads
    the query). The attributes are gathered in a tuple and digested through
    its ``repr``, which tells every string, absence (None) and number apart.

    It reads each attribute the way :func:`to_request` does, so equal keys
    mean equal inputs to the decision. Requests it cannot key (headers sent
    as raw bytes, a policy reading ``now``) give None: decided uncached. A
    digest, not the values, is kept: a token alone is ~1 KB, and 100,000
    entries must fit a worker. The function is generated once per policy.
    """
    if reads.now:
        return lambda _msg: None
    lines = [
        "def key(msg):",
        "    a = msg.attributes",
        "    http = a.request.http",
        "    h = http.headers",
        "    if not h:",
        "        return None",
    ]
    parts: list[str] = [f"h.get({name!r})" for name in credential_headers]
    parts.append("http.path or h.get(':path', '')" if reads.query else "(http.path or h.get(':path', '')).partition('?')[0]")
    if reads.method:
        parts.append("http.method or h.get(':method', '')")
    if reads.host:
        parts.append("http.host or h.get(':authority', '')")
    if reads.scheme:
        parts.append("http.scheme or h.get(':scheme', '')")
    for side in ("source", "destination"):
        if getattr(reads, f"{side}_address"):
            parts.append(f"a.{side}.address.socket_address.address")
        if getattr(reads, f"{side}_port"):
            parts.append(f"a.{side}.address.socket_address.port_value")
        if getattr(reads, f"{side}_principal"):
            parts.append(f"a.{side}.principal")
    if reads.headers is None:
        parts.append("tuple(sorted(h.items()))")
    else:
        parts.extend(f"h.get({name!r})" for name in sorted(reads.headers))
    if reads.context is None:
        parts.append("tuple(sorted(a.context_extensions.items()))")
    else:
        parts.extend(f"a.context_extensions.get({name!r})" for name in sorted(reads.context))
    lines.append(f"    return _digest(repr(({', '.join(parts)},)))")
    namespace: dict[str, Any] = {"_digest": _digest}
    exec(compile("\n".join(lines), "<authz cache key>", "exec"), namespace)
    function: Callable[[Any], Hashable | None] = namespace["key"]
    return function
