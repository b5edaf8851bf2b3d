"""A policy's own denials (``deny_with``): how it denies, compiled once.

``deny_with.unauthenticated`` shapes the 401 of a missing or bad credential
(:data:`UNAUTHENTICATED`); ``deny_with.unauthorized`` every 403 but those
authz owns (:data:`UNAUTHORIZED`); a deny rule's own ``deny_with`` wins for
its denials. A denial authz could not decide on the credential
(``jwks_unavailable``, ``internal_error``: a redirect to sign in would loop
while the issuer is down) and the ones about the call itself
(``invalid_path``, ``invalid_request``, ``untrusted_caller``) keep the
default.

A shape's status, ``location``, headers and body are templates of literal
text and the fields of :data:`FIELDS`, never a claim, token or credential.
The engine fills them from the request when it denies (:meth:`DenyWith.apply`)
into a :class:`Denial` the decision carries; only ``{request_id}`` stays a
slot, filled when the reply is rendered (:mod:`authz.reply`), since a cached
denial answers requests with other ids. Each value is encoded for where it
goes: percent-encoded in ``location`` (a query value), a JSON string's
content in a JSON body, printable ASCII with ``,`` and ``;`` percent-encoded
in a header, as it is in a text body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple
from urllib.parse import quote

from authz.errors import Reason
from authz.paths import split_path
from authz.sanitize import sanitize_header_value

#: The template fields, the only ones.
FIELDS = ("reason", "rule", "request_id", "request.host", "request.path", "request.url")
#: What each field reads of the request (for the decision cache's key).
READS: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "request.host": (("request", "host"),),
    "request.path": (),
    "request.url": (("request", "scheme"), ("request", "host"), ("request", "query")),
}
UNAUTHENTICATED = frozenset({Reason.MISSING_CREDENTIAL, Reason.INVALID_TOKEN, Reason.EXPIRED_TOKEN,
                             Reason.UNKNOWN_ISSUER, Reason.INVALID_API_KEY, Reason.CREDENTIAL_IN_LEEWAY,
                             # client certificates (authz/identity/certificate.py)
                             Reason.INVALID_CERTIFICATE, Reason.EXPIRED_CERTIFICATE, Reason.UNTRUSTED_CERTIFICATE,
                             Reason.UNTRUSTED_CERTIFICATE_HEADER,
                             # browser sessions (authz/login)
                             Reason.INVALID_SESSION, Reason.EXPIRED_SESSION})
UNAUTHORIZED = frozenset({Reason.DENIED_BY_RULE, Reason.NO_PERMISSION, Reason.REQUEST_HEADERS_TOO_LARGE})
REDIRECTS = frozenset({301, 302, 303, 307, 308})

_FIELD = re.compile(r"\{([^{}]*)\}")
Where = Literal["header", "location", "json", "text"]


class Slot(NamedTuple):
    """A template field in a template."""

    name: str


#: Literal text (already encoded for where it goes) and fields, in order.
Template = tuple[str | Slot, ...]


def _header(value: str) -> str:
    return sanitize_header_value(value).replace(",", "%2C").replace(";", "%3B")


def _json(value: str) -> str:
    return json.dumps(value)[1:-1]


ENCODERS: Mapping[str, Callable[[str], str]] = {
    "header": _header, "location": lambda value: quote(value, safe=""), "json": _json, "text": str,
}


def parse_template(text: str, encode_literal: Callable[[str], str] = str) -> Template:
    """``text`` as literal pieces and fields; ValueError names a field that
    is not one of :data:`FIELDS`, or a brace outside a field."""
    pieces: list[str | Slot] = []
    at = 0
    for match in _FIELD.finditer(text):
        pieces.append(text[at:match.start()])
        if match[1] not in FIELDS:
            raise ValueError(f"unknown template field {match[0]!r} (the fields: "
                             f"{', '.join('{' + f + '}' for f in FIELDS)})")
        pieces.append(Slot(match[1]))
        at = match.end()
    pieces.append(text[at:])
    for piece in pieces:
        if isinstance(piece, str) and ("{" in piece or "}" in piece):
            raise ValueError(f"{text!r}: a brace outside a template field")
    return _merged(encode_literal(p) if isinstance(p, str) else p for p in pieces if p != "")


def json_template(value: Any) -> Template:
    """A JSON body as a template: its strings may hold fields, filled as
    JSON string content; everything else is written as ``json`` does."""
    out: list[str | Slot] = []

    def emit(item: Any) -> None:
        if isinstance(item, dict):
            out.append("{")
            for i, (key, member) in enumerate(item.items()):
                out.append(("," if i else "") + json.dumps(str(key)) + ":")
                emit(member)
            out.append("}")
        elif isinstance(item, list):
            out.append("[")
            for i, member in enumerate(item):
                if i:
                    out.append(",")
                emit(member)
            out.append("]")
        elif isinstance(item, str):
            out.extend(('"', *parse_template(item, _json), '"'))
        else:
            out.append(json.dumps(item))

    emit(value)
    return _merged(out)


def _merged(pieces: Any) -> Template:
    out: list[str | Slot] = []
    for piece in pieces:
        if isinstance(piece, str) and out and isinstance(out[-1], str):
            out[-1] += piece
        else:
            out.append(piece)
    return tuple(out)


def fields_of(template: Template) -> set[str]:
    return {piece.name for piece in template if isinstance(piece, Slot)}


def _fill(template: Template, values: Mapping[str, str], encode: Callable[[str], str]) -> tuple[str, ...]:
    """The template with every field but ``request_id`` filled; split where
    ``request_id`` goes (``encoded_id.join(parts)`` is the text)."""
    parts: list[str] = []
    current: list[str] = []
    for piece in template:
        if isinstance(piece, str):
            current.append(piece)
        elif piece.name == "request_id":
            parts.append("".join(current))
            current = []
        else:
            current.append(encode(values[piece.name]))
    parts.append("".join(current))
    return tuple(parts)


class Denial(NamedTuple):
    """A policy's denial, filled for one request but its request id."""

    status: int
    content_type: str | None
    #: (name, parts, where): the value is the request id, encoded for where, joining the parts.
    header_parts: tuple[tuple[str, tuple[str, ...], str], ...]
    #: None: the default JSON body.
    body_parts: tuple[str, ...] | None
    body_kind: str

    def headers(self, request_id: str | None) -> tuple[tuple[str, str], ...]:
        return tuple((name, ENCODERS[where](request_id or "").join(parts)) for name, parts, where in self.header_parts)

    def body(self, request_id: str | None) -> bytes | None:
        if self.body_parts is None:
            return None
        return ENCODERS[self.body_kind](request_id or "").join(self.body_parts).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Shape:
    """One ``deny_with`` entry, compiled: its status, ``location``,
    headers and body (``json`` or ``text``; None: the default body)."""

    status: int
    location: Template | None = None
    headers: tuple[tuple[str, Template], ...] = ()
    body: Template | None = None
    body_kind: Literal["json", "text"] = "json"
    line: int = 0

    def fields(self) -> set[str]:
        found: set[str] = set()
        for template in (self.location, self.body, *(t for _, t in self.headers)):
            found |= fields_of(template or ())
        return found

    def fill(self, values: Mapping[str, str]) -> Denial:
        headers = [(name, _fill(t, values, _header), "header") for name, t in self.headers]
        if self.location is not None:
            headers.insert(0, ("location", _fill(self.location, values, ENCODERS["location"]), "location"))
        body = None if self.body is None else _fill(self.body, values, ENCODERS[self.body_kind])
        content_type = None if self.body is None else \
            ("application/json" if self.body_kind == "json" else "text/plain; charset=utf-8")
        return Denial(self.status, content_type, tuple(headers), body, self.body_kind)


@dataclass(frozen=True, slots=True)
class DenyWith:
    """The policy's ``deny_with`` and its rules' own."""

    unauthenticated: Shape | None = None
    unauthorized: Shape | None = None
    by_rule: Mapping[str, Shape] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.unauthenticated is not None or self.unauthorized is not None or bool(self.by_rule)

    def shape(self, reason: Reason, rule: str | None) -> Shape | None:
        if reason in UNAUTHENTICATED:
            return self.unauthenticated
        if reason in UNAUTHORIZED:
            own = self.by_rule.get(rule) if rule is not None and reason is Reason.DENIED_BY_RULE else None
            return own or self.unauthorized
        return None

    def header_names(self) -> tuple[str, ...]:
        """Every header the policy's denials send the client (``location``
        too): the HTTP door's proxy must pass them on a denial."""
        names: dict[str, None] = {}
        for shape in (self.unauthenticated, self.unauthorized, *self.by_rule.values()):
            if shape is not None:
                names.update(dict.fromkeys(["location"] if shape.location is not None else []))
                names.update(dict.fromkeys(name for name, _ in shape.headers))
        return tuple(names)

    def fields(self) -> set[str]:
        found: set[str] = set()
        for shape in (self.unauthenticated, self.unauthorized, *self.by_rule.values()):
            if shape is not None:
                found |= shape.fields()
        return found

    def fill(self, reason: Reason, rule: str | None, scheme: str, host: str, path: str) -> Denial | None:
        """The denial for ``reason`` (by ``rule``) of the request at
        ``scheme://host`` + ``path`` (its path and query), or None: the default."""
        shape = self.shape(reason, rule)
        if shape is None:
            return None
        values = {"reason": reason.value, "rule": rule or "", "request.host": host,
                  "request.path": split_path(path)[0], "request.url": f"{scheme or 'http'}://{host}{path}"}
        return shape.fill(values)
