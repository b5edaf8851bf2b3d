"""Request bodies: what CEL sees of them, and every way one cannot be read.

A policy whose rules read ``request.body`` (bytes), ``request.body_json``
(the parsed JSON) or ``request.form`` (an ``application/x-www-form-urlencoded``
body) gets those fields in ``request``; each is computed the first time an
expression reads it (:class:`RequestVars`), so a rule that reads only headers
never parses a body, and a policy that reads no body never builds any of this
(:class:`authz.request.View` then hands CEL a plain map, as before).

A body that cannot be read as a rule asks is a :class:`BodyError` carrying
a stable reason: the expression that read it fails (a deny rule matches, an
allow rule does not, as any CEL error) and the engine then denies with that
reason (docs/policy.md, "Request bodies"; docs/security.md 70-74). Nothing
is guessed: a body cut by the proxy, compressed, of another media type,
malformed, ambiguous (a key twice) or too deep or wide is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from authz.errors import Reason

#: The fields of ``request`` that read the body (:mod:`authz.cel_types`).
BODY_FIELDS = ("body", "body_json", "form")
#: Envoy's mark on a body it cut at ``max_request_bytes`` ("true"), set
#: ("false") whenever it passes a body on; a client's copy is dropped by Envoy.
PARTIAL_BODY = "x-envoy-auth-partial-body"
#: The request headers a body's reading depends on: a policy that reads a
#: body reads these too (its decision-cache key and the HTTP door's headers).
BODY_HEADERS = ("content-type", "content-encoding", "content-length", "transfer-encoding", PARTIAL_BODY)
FORM = "application/x-www-form-urlencoded"

#: The policy format's defaults (``body:``, docs/policy.md).
DEFAULT_MAX_BYTES = 8 * 1024
DEFAULT_MAX_DEPTH = 32
DEFAULT_MAX_ELEMENTS = 4096
#: The most ``body.max_bytes`` may be: Envoy holds each body in memory while
#: it waits for the answer, and a CheckRequest must stay well inside gRPC's
#: 4 MiB message limit.
MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """``body:`` in a policy: the most bytes a body may have (Envoy's
    ``max_request_bytes`` too), and how deep and how many values (JSON
    values, form fields) a parsed body may hold."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    max_elements: int = DEFAULT_MAX_ELEMENTS


class BodyError(Exception):
    """A body that cannot be read as an expression asks: ``reason`` says why
    (one of the ``body_*`` reasons), ``detail`` says more, never the body."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Duplicate(ValueError):
    pass


def _media_type(value: str) -> tuple[str, str | None]:
    """(type/subtype lower-cased, charset or None) of a content-type."""
    kind, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        name, _, text = param.partition("=")
        if name.strip().lower() == "charset":
            charset = text.strip().strip('"').lower()
    return kind.strip().lower(), charset


def _is_json(kind: str) -> bool:
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def check_whole(body: bytes | None, headers: Mapping[str, str], limits: BodyLimits) -> bytes:
    """``body``, when it is the request's whole body, within the limit, as
    the client sent it (no content coding); else raise :class:`BodyError`.
    None: a body followed that the door did not read."""
    if body is None:
        raise BodyError(Reason.BODY_UNAVAILABLE, "the request's body was not read")
    if headers.get(PARTIAL_BODY) == "true" or len(body) > limits.max_bytes:
        raise BodyError(Reason.BODY_TOO_LARGE, f"the body is over body.max_bytes ({limits.max_bytes} bytes)")
    declared = headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise BodyError(Reason.BODY_INVALID, "content-length is not a number")
        if int(declared) > limits.max_bytes:
            raise BodyError(Reason.BODY_TOO_LARGE, f"the body is over body.max_bytes ({limits.max_bytes} bytes)")
        if int(declared) != len(body):
            raise BodyError(Reason.BODY_UNAVAILABLE, f"the proxy passed on {len(body)} of the {declared} bytes "
                                                     "the request declares (is with_request_body on?)")
    elif not body and PARTIAL_BODY not in headers and "transfer-encoding" in headers:
        raise BodyError(Reason.BODY_UNAVAILABLE, "the request has a body the proxy did not pass on "
                                                 "(is with_request_body on?)")
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding and encoding != "identity":
        raise BodyError(Reason.BODY_ENCODING, f"content-encoding {encoding!r}: authz reads no compressed body")
    return body


def parse_json(body: bytes, headers: Mapping[str, str], limits: BodyLimits) -> Any:
    """``request.body_json``: the body as JSON, when the content-type says
    JSON (``application/json`` or ``application/*+json``, UTF-8)."""
    kind, charset = _media_type(headers.get("content-type", ""))
    if not _is_json(kind) or charset not in (None, "utf-8"):
        raise BodyError(Reason.BODY_CONTENT_TYPE, f"body_json read on a body of type {kind or '(none)'!r}")
    _check_shape(body, limits)
    try:
        text = body.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constant)
    except _Duplicate as exc:
        raise BodyError(Reason.BODY_DUPLICATE_KEY, f"the JSON body has the key {str(exc)!r} twice") from None
    except RecursionError:
        raise BodyError(Reason.BODY_TOO_COMPLEX,
                        f"the JSON body is deeper than body.max_depth ({limits.max_depth})") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer too long to convert
        raise BodyError(Reason.BODY_INVALID, f"the body is not JSON: {str(exc)[:80]}") from None
    return value


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different: with a key twice, parsers
    disagree on which value counts (the upstream may act on the other)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return out


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


#: A JSON string, escapes included (the unrolled form: no backtracking).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
#: A container holding no container: removed once per level of depth.
_INNERMOST = re.compile(rb"[\[{][^\[\]{}]*[\]}]")
_EMPTY = re.compile(rb"\[\s*\]|\{\s*\}")


def _check_shape(body: bytes, limits: BodyLimits) -> None:
    """Depth and count of values within the limits, measured on the text
    before anything is built (a bomb never becomes objects), by C-level
    scans: with the strings blanked out, a valid JSON text holds one value
    per comma, plus one per non-empty container, plus the root; and its
    depth is how many times its innermost containers can be removed."""
    text = _STRING.sub(b'""', body)
    values = 1 + text.count(b",") + text.count(b"[") + text.count(b"{") - len(_EMPTY.findall(text))
    if values > limits.max_elements:
        raise BodyError(Reason.BODY_TOO_COMPLEX,
                        f"the JSON body holds more than body.max_elements ({limits.max_elements}) values")
    depth = 0
    while True:
        text, removed = _INNERMOST.subn(b"0", text)
        if not removed:
            return
        depth += 1
        if depth > limits.max_depth:
            raise BodyError(Reason.BODY_TOO_COMPLEX,
                            f"the JSON body is deeper than body.max_depth ({limits.max_depth})")


def parse_form(body: bytes, headers: Mapping[str, str], limits: BodyLimits) -> dict[str, str]:
    """``request.form``: an ``application/x-www-form-urlencoded`` body as a
    map; a name twice is refused (which one counts differs by framework)."""
    kind, charset = _media_type(headers.get("content-type", ""))
    if kind != FORM or charset not in (None, "utf-8"):
        raise BodyError(Reason.BODY_CONTENT_TYPE, f"form read on a body of type {kind or '(none)'!r}")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), encoding="utf-8",
                          errors="strict", max_num_fields=limits.max_elements)
    except UnicodeDecodeError:
        raise BodyError(Reason.BODY_INVALID, "the form body is not UTF-8") from None
    except ValueError as exc:
        if "Max number of fields" in str(exc):
            raise BodyError(Reason.BODY_TOO_COMPLEX,
                            f"the form body has more than body.max_elements ({limits.max_elements}) fields") from None
        raise BodyError(Reason.BODY_INVALID, "the body is not a form (name=value&...)") from None
    form = dict(pairs)
    if len(form) != len(pairs):
        raise BodyError(Reason.BODY_DUPLICATE_KEY, "the form body names a field twice")
    return form


_PARSERS = {"body_json": parse_json, "form": parse_form}


class RequestVars(dict):  # type: ignore[type-arg]
    """The ``request`` map of a policy that reads a body: its body fields
    are computed when an expression first asks for one (``in`` or ``[]``:
    how :func:`authz.cel.select_reads` reads a path), then kept. A field
    that cannot be read is left out, so the expression fails (fail closed),
    and the first :class:`BodyError` met is kept in :attr:`problem` for the
    engine to name."""

    __slots__ = ("_body", "_failed", "_headers", "_limits", "problem")

    def __init__(self, built: dict[str, Any], body: bytes | None, headers: Mapping[str, str],
                 limits: BodyLimits) -> None:
        super().__init__(built)
        self._body = body
        self._headers = headers
        self._limits = limits
        self._failed: set[str] = set()
        self.problem: BodyError | None = None

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or (key in BODY_FIELDS and self._fill(str(key)))

    def __missing__(self, key: str) -> Any:
        if key in BODY_FIELDS and self._fill(key):
            return dict.__getitem__(self, key)
        raise KeyError(key)

    def _fill(self, key: str) -> bool:
        if key in self._failed:
            return False
        try:
            body = check_whole(self._body, self._headers, self._limits)
            parse = _PARSERS.get(key)
            value = body if parse is None else parse(body, self._headers, self._limits)
        except BodyError as exc:
            self._failed.add(key)
            if self.problem is None:
                self.problem = exc
            return False
        self[key] = value
        return True
