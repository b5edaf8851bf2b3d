"""The gRPC door: the one module that reads a CheckRequest and writes a CheckResponse.

Envoy's messages are ``authz._proto``, generated at build time from the
.proto files in ``protos/vendor/`` (see protos/README.md). Every request
attribute the decision core knows (:data:`authz.request.ATTRIBUTES`) is read
from a CheckRequest as :data:`FIELDS` says, and from nowhere else:
:func:`to_request` builds the core's :class:`Request` from it, the decision
cache key (:func:`make_cache_key`) reads exactly the attributes a policy
reads through it, and so do the fields of logs and spans (:func:`summary`).
Nothing here imports gRPC, so ``authz check`` uses it offline.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from operator import attrgetter
from typing import Any, Literal, NamedTuple

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from authz.decision import Decision
from authz.errors import Reason
from authz.policy import Reads
from authz.reply import echoed_request_id, render
from authz.request import ATTRIBUTES, Request
from authz.response_plan import ROOMY_HEADERS
from authz.wire import body_digest, cache_digest

CheckRequest = external_auth_pb2.CheckRequest
CheckResponse = external_auth_pb2.CheckResponse
#: The gRPC service authz implements, as registered in the default descriptor
#: pool (by importing external_auth_pb2), where server reflection finds it.
AUTHORIZATION_SERVICE: str = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


class Field(NamedTuple):
    """Where one request attribute is in a CheckRequest: a field path inside
    ``attributes.request.http``, ``attributes.source`` or
    ``attributes.destination``, and the HTTP/2 pseudo-header read instead
    when Envoy leaves the field empty."""

    message: Literal["http", "source", "destination"]
    path: str
    pseudo_header: str | None = None


#: The table: every attribute of :data:`authz.request.ATTRIBUTES`, read from a
#: CheckRequest. Headers are ``http.headers`` (or ``http.header_map`` when
#: Envoy sends raw bytes) and context is ``attributes.context_extensions``.
FIELDS: Mapping[str, Field] = {
    "method": Field("http", "method", ":method"),
    "path": Field("http", "path", ":path"),
    "host": Field("http", "host", ":authority"),
    "scheme": Field("http", "scheme", ":scheme"),
    "source_address": Field("source", "address.socket_address.address"),
    "source_port": Field("source", "address.socket_address.port_value"),
    "source_principal": Field("source", "principal"),
    "destination_address": Field("destination", "address.socket_address.address"),
    "destination_port": Field("destination", "address.socket_address.port_value"),
    "destination_principal": Field("destination", "principal"),
    "source_certificate": Field("source", "certificate"),
}
if tuple(FIELDS) != ATTRIBUTES:  # pragma: no cover - caught by importing this module in any test
    raise ImportError("authz.wire.grpc.FIELDS must read every attribute of authz.request.ATTRIBUTES, in order")

_GET = {name: attrgetter(field.path) for name, field in FIELDS.items()}


def parse_json_request(text: str) -> Any:
    """A CheckRequest from its protobuf JSON mapping (raises ``ParseError``)."""
    return json_format.Parse(text, CheckRequest())


def _headers(http: Any) -> Mapping[str, str]:
    """The request headers, names as Envoy sent them (lower case, as HTTP/2
    requires). Headers sent as raw bytes (``header_map``) must be valid UTF-8
    (UnicodeDecodeError otherwise); repeated ones are joined with ','."""
    if http.headers:
        return http.headers  # type: ignore[no-any-return]
    headers: dict[str, str] = {}
    for entry in http.header_map.headers:
        value = entry.value or entry.raw_value.decode("utf-8")
        key = entry.key
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    return headers


def _read(check: Any, names: tuple[str, ...], headers: Mapping[str, str]) -> dict[str, Any]:
    """The named attributes of a CheckRequest, each read as :data:`FIELDS` says."""
    attributes = check.attributes
    messages = {"http": attributes.request.http, "source": attributes.source, "destination": attributes.destination}
    values = {}
    for name in names:
        field = FIELDS[name]
        value = _GET[name](messages[field.message])
        if not value and field.pseudo_header is not None:
            value = headers.get(field.pseudo_header, "")
        values[name] = value
    return values


def body_of(http: Any) -> bytes:
    """The request body Envoy passed on (``with_request_body``): ``raw_body``
    with ``pack_as_bytes``, else ``body`` (text); b"" when none."""
    raw: bytes = http.raw_body
    return raw or http.body.encode("utf-8")


def body_size(check: Any) -> int:
    """The length of a CheckRequest's body (text counted in characters: at most its bytes)."""
    return len(check.attributes.request.http.raw_body) + len(check.attributes.request.http.body)


def to_request(check: Any, **trust: Any) -> Request:
    """The core's view of a CheckRequest; ``trust``: the door's
    ``trusted_xfcc``/``trusted_client_cert`` (:class:`GrpcDoor`)."""
    http = check.attributes.request.http
    headers = _headers(http)
    return Request(headers=dict(headers), context=dict(check.attributes.context_extensions),
                   body=body_of(http), **_read(check, ATTRIBUTES, headers), **trust)


_SUMMARY = ("method", "host", "path")


def summary(check: Any) -> tuple[str | None, str, str, str]:
    """(request id to echo, method, host, path) for logs and spans, read
    without building a :class:`Request`."""
    headers = trace_headers(check)
    values = _read(check, _SUMMARY, headers)
    return echoed_request_id(headers), values["method"], values["host"], values["path"]


def request_id_of(check: Any) -> str | None:
    """The request id a denial echoes (a cached denial is answered anew for
    each request, with its own id)."""
    return echoed_request_id(check.attributes.request.http.headers)


def trace_headers(check: Any) -> Mapping[str, str]:
    """The headers a trace parent is read from."""
    try:
        return _headers(check.attributes.request.http)
    except UnicodeDecodeError:
        return {}


def addresses(check: Any) -> tuple[str | None, str | None]:
    """(source address, destination ``address:port``) as Envoy states them:
    its downstream address is the client after the hops Envoy trusts
    (``xff_num_trusted_hops``, ``use_remote_address``)."""
    attributes = check.attributes
    source = attributes.source.address.socket_address.address or None
    destination = attributes.destination.address.socket_address
    if not destination.address:
        return source, None
    host = f"[{destination.address}]" if ":" in destination.address else destination.address
    return source, f"{host}:{destination.port_value}"


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


def _add_client_headers(options: Any, headers: Any) -> None:
    """Headers for the client, each added beside what the upstream answered
    (two ``set-cookie`` are two headers)."""
    for name, value in headers:
        option = options.add()
        option.header.key = name
        option.header.value = value
        option.append_action = _APPEND


def _add_denial_headers(options: Any, headers: Any) -> None:
    """A denial's headers, each replacing any other but ``set-cookie``, of
    which a reply may carry several (sign-in sets one cookie and clears
    another): each is added."""
    for name, value in headers:
        option = options.add()
        option.header.key = name
        option.header.value = value
        if name == "set-cookie":
            option.append_action = _APPEND
        else:
            option.append.value = False
            option.append_action = _OVERWRITE


def to_response(decision: Decision, request_id: str | None) -> Any:
    """The CheckResponse for a decision, encoding its reply
    (:func:`authz.reply.render`). Never empty: an empty response means
    allow to Envoy, so every response carries an explicit status. Its
    ``dynamic_metadata`` is what Envoy keeps under the ext_authz filter's
    namespace, on allow and on deny (:meth:`Decision.envoy_metadata`)."""
    reply = render(decision, request_id)
    response = CheckResponse()
    response.status.code = reply.grpc_code  # present, though zero on allow
    if reply.allowed:
        ok = response.ok_response
        _add_headers(ok.headers, reply.upstream)
        ok.headers_to_remove.extend(reply.remove)
        if reply.client:
            _add_client_headers(ok.response_headers_to_add, reply.client)
    else:
        response.status.message = reply.message
        denied = response.denied_response
        # envoy.type.v3.StatusCode's numbers are the HTTP status codes themselves.
        denied.status.code = reply.status  # type: ignore[assignment]
        _add_denial_headers(denied.headers, reply.client)
        denied.body = reply.body.decode("utf-8")
    response.dynamic_metadata.update(reply.metadata)
    return response


def destination_principal(check: Any) -> str:
    """The destination's SPIFFE ID (``callers: destinations``), where :data:`FIELDS` says."""
    value: str = _GET["destination_principal"](check.attributes.destination)
    return value


def _never(_check: Any) -> None:
    return None


def make_cache_key(reads: Reads, credential_headers: tuple[str, ...]) -> Callable[[Any], Hashable | None]:
    """A function from CheckRequest to the decision-cache key: a 160-bit
    SHA-256 digest over the credential headers and exactly the attributes
    the policy reads (the path always; without its query unless a rule reads
    the query), each read where :data:`FIELDS` says. An attribute with a
    pseudo-header fallback keys on both the field and the header, so equal
    keys mean equal inputs to the decision. The parts are gathered in a list
    and digested (:func:`authz.wire.cache_digest`).

    Requests it cannot key (headers sent as raw bytes, more headers than
    leave room for any cached answer, a policy reading ``now``) give None:
    decided uncached. A digest, not the values, is kept:
    a token alone is ~1 KB, and 100,000 entries must fit a worker. The
    readers are C-level getters chosen once per policy, so a key costs what
    reading those fields costs.
    """
    if reads.now:
        return _never
    read = [name for name in reads.attributes() if name != "path"]

    def fields_of(message: str) -> Callable[[Any], Any] | None:
        paths = [FIELDS[name].path for name in read if FIELDS[name].message == message]
        return attrgetter(*paths) if paths else None

    http_fields, source_fields, destination_fields = fields_of("http"), fields_of("source"), fields_of("destination")
    pseudo = [f.pseudo_header for name in read if (f := FIELDS[name]).pseudo_header is not None]
    named = tuple(credential_headers) + tuple(pseudo) + tuple(sorted(reads.headers or ()))
    every_header = reads.headers is None
    context_names = None if reads.context is None else tuple(sorted(reads.context))
    with_query = reads.query
    with_body = reads.body

    def key(check: Any) -> Hashable | None:
        attributes = check.attributes
        http = attributes.request.http
        headers = http.headers
        if not headers or len(headers) > ROOMY_HEADERS:
            return None
        path = http.path or headers.get(":path", "")
        parts: list[Any] = ["grpc", path if with_query else path.partition("?")[0], *map(headers.get, named)]
        if http_fields is not None:
            parts.append(http_fields(http))
        if source_fields is not None:
            parts.append(source_fields(attributes.source))
        if destination_fields is not None:
            parts.append(destination_fields(attributes.destination))
        if every_header:
            parts.append(tuple(sorted(headers.items())))
        if context_names is None:
            parts.append(tuple(sorted(attributes.context_extensions.items())))
        elif context_names:
            parts.extend(map(attributes.context_extensions.get, context_names))
        if with_body:  # its digest: the memo must not hold bodies
            parts.append(body_digest(body_of(http)))
        return cache_digest(parts)

    return key


def _encode(decision: Decision, request_id: str | None) -> bytes:
    return bytes(to_response(decision, request_id).SerializeToString())


class GrpcDoor:
    """The gRPC door as the servicer drives it: serialized CheckRequest in,
    serialized CheckResponse out (the same steps as :class:`authz.wire.http.HttpDoor`)."""

    name = "grpc"
    #: What a request that cannot be read raises: a 403 ``invalid_request``.
    invalid: tuple[type[Exception], ...] = (DecodeError, UnicodeDecodeError)
    parse = staticmethod(CheckRequest.FromString)
    make_cache_key = staticmethod(make_cache_key)
    request_id_of = staticmethod(request_id_of)
    summary = staticmethod(summary)
    trace_headers = staticmethod(trace_headers)
    addresses = staticmethod(addresses)
    encode = staticmethod(_encode)
    destination_principal = staticmethod(destination_principal)
    invalid_request = _encode(Decision(allowed=False, reason=Reason.INVALID_REQUEST), None)
    internal_error = _encode(Decision(allowed=False, reason=Reason.INTERNAL_ERROR), None)

    def __init__(self, *, trusted_xfcc: int = 0, trusted_client_cert: bool = False) -> None:
        """``trusted_xfcc``: the ``x-forwarded-client-cert`` element a hop
        authz trusts wrote (``serve --trust-xfcc``: -1, or -2 with
        ``--trust-caller-xfcc``); ``trusted_client_cert``: a hop sets the
        RFC 9440 ``client-cert`` headers (``--trust-client-cert``). Read only
        by the certificates credential (authz/identity/certificate.py)."""
        self._trust: dict[str, Any] = {}
        if trusted_xfcc:
            self._trust["trusted_xfcc"] = trusted_xfcc
        if trusted_client_cert:
            self._trust["trusted_client_cert"] = True

    def to_request(self, check: Any) -> Request:
        return to_request(check, **self._trust)

    @staticmethod
    def call_timeout(message: CheckRequest) -> float | None:
        """None: a gRPC call's deadline comes with the call, not the message."""
        return None


GRPC = GrpcDoor()
