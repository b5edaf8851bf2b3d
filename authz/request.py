"""One authorization request, free of any transport, and what a decision sees of it.

A door (:mod:`authz.wire`) builds a :class:`Request` from what Envoy sent;
the engine wraps it in a :class:`View` for matchers, CEL and the response.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl

from authz.body import BodyLimits, RequestVars
from authz.matchers import parse_ip

if TYPE_CHECKING:
    from authz.body import BodyError
    from authz.identity.base import Identity

_EMPTY: Mapping[str, str] = MappingProxyType({})
_UNPARSED = object()

#: The attributes of a request besides its headers, context and body, as
#: :class:`Request` fields: each door reads every one of them from its wire
#: (for gRPC, :data:`authz.wire.grpc.FIELDS`).
ATTRIBUTES = (
    "method", "path", "host", "scheme",
    "source_address", "source_port", "source_principal",
    "destination_address", "destination_port", "destination_principal",
    "source_certificate",
)


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
    #: Attributes (names of :data:`ATTRIBUTES`, or ``"context"``) the door
    #: that read this request cannot know: a matcher that reads one fails
    #: closed (a deny rule matches, an allow rule or permission does not).
    unknown: frozenset[str] = frozenset()
    #: The client certificate of the connection Envoy received (URL-encoded
    #: PEM, Envoy's ``source.certificate`` with ``include_peer_certificate``);
    #: read only by the ``certificates`` credential, never shown to CEL.
    source_certificate: str = ""
    #: Which ``x-forwarded-client-cert`` element a hop authz trusts wrote
    #: (-1 the last, -2 the one before it; 0: none is trusted), and whether
    #: one sets the RFC 9440 ``client-cert`` headers: the door's settings
    #: (``serve --trust-xfcc``, ``--trust-client-cert``), the same for every
    #: request through it.
    trusted_xfcc: int = 0
    trusted_client_cert: bool = False
    #: The body as the door carried it (b"": none; None: one follows that
    #: the door did not read); read only by a policy whose rules read
    #: ``request.body``, ``body_json`` or ``form`` (authz.body).
    body: bytes | None = b""


class View:
    """What matchers and CEL see of one request, built lazily per decision."""

    __slots__ = ("_ip", "_vars", "body_limits", "data", "identity", "now", "path", "query", "request")

    def __init__(self, request: Request, path: str, query: str, identity: Identity, now: float,
                 body_limits: BodyLimits | None = None) -> None:
        self.request = request
        #: Set when the policy reads a body: ``request`` then has its body
        #: fields, each computed when first read (authz.body.RequestVars).
        self.body_limits = body_limits
        self.path = path
        self.query = query
        self.identity = identity
        self.now = now
        self._vars: dict[str, Any] = {}
        self._ip: Any = _UNPARSED
        #: The answers of the policy's data sources this Check needs, by
        #: name (``data``; authz.data): set by the engine before any rule.
        self.data: dict[str, Any] = {}

    @property
    def source_ip(self) -> Any:
        """The source address as an IP (parsed once per request), or None."""
        if self._ip is _UNPARSED:
            self._ip = parse_ip(self.request.source_address)
        return self._ip

    @property
    def body_problem(self) -> BodyError | None:
        """The first body field an expression read and could not have (its reason), or None."""
        built = self._vars.get("request")
        return built.problem if type(built) is RequestVars else None

    def variables(self, roots: tuple[str, ...]) -> dict[str, Any]:
        out = self._vars
        for root in roots:
            if root not in out:
                out[root] = self._build(root)
        return out

    def _build(self, root: str) -> Any:
        request = self.request
        if root == "request":
            headers = request.headers
            built = {
                "method": request.method,
                "host": request.host,
                "path": self.path,
                # Read, never written: a plain dict is handed over as it is.
                "headers": headers if type(headers) is dict else dict(headers),
                "scheme": request.scheme,
            }
            query = _query(self.query)
            if query is not None:
                built["query"] = query
            if self.body_limits is not None:
                return RequestVars(built, request.body, headers, self.body_limits)
            return built
        if root == "source":
            peer: dict[str, Any] = {"address": request.source_address, "port": request.source_port,
                                    "principal": request.source_principal}
            return _known(peer, "source_", request.unknown) if request.unknown else peer
        if root == "destination":
            local: dict[str, Any] = {
                "address": request.destination_address,
                "port": request.destination_port,
                "principal": request.destination_principal,
            }
            return _known(local, "destination_", request.unknown) if request.unknown else local
        if root == "context":
            # Unknown as a whole: an empty map, so every key read is missing.
            return {} if "context" in request.unknown else dict(request.context)
        if root == "identity":
            return self.identity.cel_value()
        if root == "now":
            return datetime.datetime.fromtimestamp(self.now, datetime.UTC)
        if root == "data":
            return self.data
        raise KeyError(root)


def _known(fields: dict[str, Any], prefix: str, unknown: frozenset[str]) -> dict[str, Any]:
    """``fields`` without those the door could not know: an expression that
    reads one then fails (a response header or metadata key is left out)
    instead of reading an empty value as if the door had carried it."""
    return {name: value for name, value in fields.items() if prefix + name not in unknown}


def _query(text: str) -> dict[str, str] | None:
    """The query's parameters, or None when a name appears more than once
    (``?tenant=a&tenant=b``, or ``tenan%74=b`` beside ``tenant=a``):
    frameworks disagree on which value counts, so ``request.query`` is then
    absent and every expression that reads it fails closed (a deny rule
    matches, an allow rule does not)."""
    if not text:
        return {}
    pairs = parse_qsl(text, keep_blank_values=True)
    query = dict(pairs)
    return query if len(query) == len(pairs) else None


class CookieError(ValueError):
    """A cookie set more than once with different values (``twice``), or empty."""

    def __init__(self, message: str, *, twice: bool) -> None:
        super().__init__(message)
        self.twice = twice


def cookie_value(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in the Cookie ``header``; None when
    absent; :class:`CookieError` when it is there twice with different values
    (which one would a server behind read?) or empty."""
    if not header or name not in header:
        return None
    found: str | None = None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            if found is not None and value != found:
                raise CookieError(f"cookie {name} is set more than once", twice=True)
            found = value
    if found is not None and not found:
        raise CookieError(f"cookie {name} is empty", twice=False)
    return found
