"""The HTTP door: Envoy's HTTP ext_authz protocol (``http_service``;
Emissary's ``proto: http``; Istio's ``envoyExtAuthzHttp``), served by granian.

Envoy sends the client's method, its path behind a configured prefix, and the
headers it is allowed to forward; it allows the request on a 200 (copying the
headers its ``allowed_upstream_headers`` name, and removing those listed in
``x-envoy-auth-headers-to-remove``) and otherwise answers the client with
authz's status, headers and body.

This module is the door: it reads the call (:mod:`authz.wire.http_call`,
with the trusted forwarding headers of :mod:`authz.wire.forwarded`) into a
:class:`Request`, keys the decision cache, and encodes the reply; what
``authz validate --door http`` warns of is :mod:`authz.wire.http_advice`.
Every attribute of
:data:`authz.request.ATTRIBUTES` is read as :data:`FIELDS` says, the same
attributes the gRPC door reads from a CheckRequest, so both doors build the
same :class:`Request` from the same client request. What this protocol does
not carry (the source port, the destination, ``context_extensions``; the
source address and SPIFFE ID unless trusted headers are configured) is
marked unknown in the Request: a rule that reads it fails closed.

granian serves it through ASGI rather than RSGI: an RSGI scope holds the
path only percent-decoded, so ``/a%2Fb`` and ``/a/b`` would look alike, while
the path must be decided exactly as the client sent it (``raw_path``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from authz.decision import Decision
from authz.errors import Reason
from authz.metadata import as_text
from authz.policy import Reads
from authz.reply import echoed_request_id, render
from authz.request import ATTRIBUTES, Request
from authz.response_plan import ROOMY_BYTES, ROOMY_HEADERS
from authz.wire import body_digest, cache_digest
from authz.wire.forwarded import XFCC, XFF, client_cert_uri, forwarded_for
from authz.wire.http_call import Call, InvalidCall, parse
from authz.wire.http_headers import ENVOYS, PSEUDO_HEADERS, RENAMED, client_headers

#: Envoy lists the headers it must remove from the upstream request here.
HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"
#: The header in which Envoy states the call's timeout (the ext_authz
#: ``http_service`` timeout), in milliseconds.
EXPECTED_TIMEOUT = "x-envoy-expected-rq-timeout-ms"

HttpReply = tuple[int, list[tuple[bytes, bytes]], bytes]


@dataclass(frozen=True, slots=True)
class HttpDoorSettings:
    """What the operator tells the door about the Envoy in front of it.

    ``prefix``: Envoy's ``path_prefix`` (the call's path is prefix + the
    client's path). ``forwarded_hops``: how many trusted proxies, counted from
    the right, appended to ``x-forwarded-for``; the client address is the
    entry that many from the right (0: do not trust the header; the source
    address is unknown). ``trust_xfcc``: read the client's SPIFFE ID from
    ``x-forwarded-client-cert``, which Envoy sets itself (and strips from
    clients) with ``forward_client_cert_details: SANITIZE_SET``.
    ``trust_caller_xfcc``: authz's own sidecar appends the last element (the
    caller's, ``authz.server.caller_identity``), so the client's is the one
    before it.
    """

    prefix: str = ""
    forwarded_hops: int = 0
    trust_xfcc: bool = False
    trust_caller_xfcc: bool = False
    #: A hop in front sets the RFC 9440 ``client-cert`` headers (and drops
    #: the client's): the certificates credential may read them.
    trust_client_cert: bool = False

    def certificate_trust(self) -> dict[str, Any]:
        """What the certificates credential may read (``Request.trusted_xfcc``,
        ``trusted_client_cert``), as keyword arguments for a Request."""
        trust: dict[str, Any] = {}
        if self.trust_xfcc:
            trust["trusted_xfcc"] = -2 if self.trust_caller_xfcc else -1
        if self.trust_client_cert:
            trust["trusted_client_cert"] = True
        return trust

    def unknown(self) -> frozenset[str]:
        known = {name for name, field in FIELDS.items() if field.source in ("line", "header")}
        if self.forwarded_hops > 0:
            known.add("source_address")
        if self.trust_xfcc:
            known.add("source_principal")
        return frozenset(set(ATTRIBUTES) - known) | {"context"}


class Field(NamedTuple):
    """Where one attribute is in an HTTP call: the request line, a header,
    a trusted forwarding header (only when configured), or nowhere."""

    source: Literal["line", "header", "forwarded", "xfcc", "none"]
    header: str | None = None


#: The table: every attribute of :data:`authz.request.ATTRIBUTES`, read from an HTTP call.
FIELDS: Mapping[str, Field] = {
    "method": Field("line"),
    "path": Field("line"),
    "host": Field("header", "host"),
    "scheme": Field("header", "x-forwarded-proto"),
    "source_address": Field("forwarded", XFF),
    "source_port": Field("none"),
    "source_principal": Field("xfcc", XFCC),
    "destination_address": Field("none"),
    "destination_port": Field("none"),
    "destination_principal": Field("none"),
    # Envoy's HTTP ext_authz client sends headers only: the client
    # certificate reaches this door as the trusted x-forwarded-client-cert
    # element's Cert= (the certificates credential's "xfcc" source).
    "source_certificate": Field("none"),
}
if tuple(FIELDS) != ATTRIBUTES:  # pragma: no cover - caught by importing this module in any test
    raise ImportError("authz.wire.http.FIELDS must read every attribute of authz.request.ATTRIBUTES, in order")

#: Where the cache key finds a pseudo-header's value in the call.
_PSEUDO_SOURCES = {pseudo: FIELDS[name].header for pseudo, name in PSEUDO_HEADERS.items()}


def _never(_call: Call) -> None:
    return None


def _pairs(pairs: Any) -> list[tuple[bytes, bytes]]:
    return [(name.encode("ascii"), value.encode("ascii")) for name, value in pairs]


def to_reply(decision: Decision, request_id: str | None) -> HttpReply:
    """(status, headers, body) for Envoy, encoding the decision's reply
    (:func:`authz.reply.render`): 200 with the upstream headers (and the
    removals) and the client's headers to allow; the denial's status,
    headers and body to deny (the same as the gRPC door's).

    Dynamic metadata travels as one header per key, named as the key (Envoy
    stores each under its header name, ``dynamic_metadata_from_headers``),
    on allow and on deny: a string as it is, any other value as its JSON
    text. The policy's names never collide (``authz.config.response``), and
    Envoy copies none of these headers to the client or the upstream unless
    its configuration lists them."""
    reply = render(decision, request_id)
    metadata = [(key.encode("ascii"), as_text(value).encode("ascii")) for key, value in reply.metadata.items()]
    if reply.allowed:
        headers = _pairs(reply.upstream)
        if reply.remove:
            headers.append((HEADERS_TO_REMOVE.encode("ascii"), ",".join(reply.remove).encode("ascii")))
        if reply.client:
            headers += _pairs(reply.client)
        return 200, headers + metadata, b""
    return reply.status, _pairs(reply.client) + metadata, reply.body


class HttpDoor:
    """The HTTP door for one set of settings."""

    name = "http"
    #: What a call that cannot be read raises: a 403 ``invalid_request``.
    invalid: tuple[type[Exception], ...] = (InvalidCall,)
    invalid_request = to_reply(Decision(allowed=False, reason=Reason.INVALID_REQUEST), None)
    internal_error = to_reply(Decision(allowed=False, reason=Reason.INTERNAL_ERROR), None)

    def __init__(self, settings: HttpDoorSettings) -> None:
        self.settings = settings
        self._prefix = settings.prefix.encode("ascii")
        self._unknown = settings.unknown()
        self._trust = settings.certificate_trust()

    def parse(self, scope: Mapping[str, Any] | Call) -> Call:
        """The call in an ASGI scope; a :class:`Call` the application read
        already (to read its body first, :func:`authz.wire.http_call.read_body`)
        as it is."""
        if scope.__class__ is Call:
            return scope
        return parse(scope, self._prefix)  # type: ignore[arg-type]

    @staticmethod
    def call_timeout(call: Call) -> float | None:
        """The call's timeout as Envoy states it (``x-envoy-expected-rq-timeout-ms``,
        the ext_authz ``http_service`` timeout), or None. Read only when a
        check must wait for a key set, and only ever to wait less."""
        value = call.headers.get(EXPECTED_TIMEOUT)
        if value is None or not (value.isascii() and value.isdigit()) or len(value) > 9:
            return None
        return int(value) / 1000

    def _read(self, call: Call, name: str) -> Any:
        field = FIELDS[name]
        if name in self._unknown:
            return 0 if name.endswith("_port") else ""
        if field.source == "line":
            return call.method if name == "method" else call.target
        value = call.headers.get(field.header or "")
        if field.source == "forwarded":
            return forwarded_for(value, self.settings.forwarded_hops)
        if field.source == "xfcc":
            return client_cert_uri(value, -2 if self.settings.trust_caller_xfcc else -1)
        return value or ""

    def to_request(self, call: Call) -> Request:
        # call.body None: a body follows that was not read (the policy read
        # none when the call came): a rule that reads it is refused (body_unavailable).
        attributes = {name: self._read(call, name) for name in ATTRIBUTES}
        return Request(headers=client_headers(call.headers, attributes), unknown=self._unknown, body=call.body,
                       **attributes, **self._trust)

    def make_cache_key(self, reads: Reads, credential_headers: tuple[str, ...]) -> Callable[[Call], Hashable | None]:
        """Like the gRPC door's key: a digest of the credential headers and
        exactly the attributes the policy reads, each read where
        :data:`FIELDS` says (here all are the request line or headers), so
        equal keys mean equal Requests for the decision."""
        if reads.now:
            return _never
        read = [name for name in reads.attributes() if name not in self._unknown]
        sources = [FIELDS[name].header for name in read if FIELDS[name].header is not None]
        # A header the policy reads, where the call carries it: a
        # pseudo-header in the request line or its own header (:path is the
        # path and query, always keyed below), a renamed one under its name
        # in the call; Envoy's own are never the client's: absent for it.
        wanted = sorted(reads.headers or ())
        renamed = {shown: name for name, shown in RENAMED.items()}
        headers = [_PSEUDO_SOURCES.get(n) or renamed.get(n, n) for n in wanted if n not in ENVOYS]
        names = tuple(name.encode() for name in (*credential_headers, *(h for h in sources if h), *headers) if name)
        every_header = reads.headers is None
        with_method = "method" in read or ":method" in wanted or every_header
        with_query = reads.query or ":path" in wanted or every_header
        with_body = reads.body

        def key(call: Call) -> Hashable | None:
            headers = call.raw
            if call.size > ROOMY_BYTES or len(headers) > ROOMY_HEADERS:
                return None  # no room for every answer the cache may hold
            parts: list[Any] = ["http", call.path, call.query if with_query else None,
                                call.method if with_method else None, *map(headers.get, names)]
            if every_header:
                parts.append(tuple(sorted(headers.items())))
            if with_body:  # its digest: the memo must not hold bodies
                if call.body is None:
                    return None
                parts.append(body_digest(call.body))
            return cache_digest(parts)

        return key

    @staticmethod
    def request_id_of(call: Call) -> str | None:
        return echoed_request_id(call.headers)

    @staticmethod
    def summary(call: Call) -> tuple[str | None, str, str, str]:
        return echoed_request_id(call.headers), call.method, call.headers.get("host", ""), call.target

    @staticmethod
    def trace_headers(call: Call) -> Mapping[str, str]:
        return call.headers

    def addresses(self, call: Call) -> tuple[str | None, str | None]:
        """The client as the trusted ``x-forwarded-for`` entry names it (None
        without ``--trusted-forwarded-hops``); the destination is not told."""
        if "source_address" in self._unknown:
            return None, None
        return self._read(call, "source_address") or None, None

    @staticmethod
    def encode(decision: Decision, request_id: str | None) -> HttpReply:
        return to_reply(decision, request_id)

    @staticmethod
    def destination_principal(call: Call) -> str:
        """Never carried by this protocol (:data:`FIELDS`): "" (so a caller
        admitted only for ``destinations: self`` is refused here)."""
        return ""
