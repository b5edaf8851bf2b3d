"""An HTTP ext_authz call as Envoy sends it, read from an ASGI ``http``
scope once: the client's method, its request target exactly as sent
(``raw_path``, so ``/a%2Fb`` and ``/a/b`` stay apart) and the headers as
bytes. A call that is not well-formed raises :class:`InvalidCall`.

A call may carry the client's body (Envoy's ``with_request_body``): the
ASGI application reads it (:func:`read_body`, bounded) into
:attr:`Call.body` before the call is decided."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The most header bytes (names and values) a call may carry.
MAX_HEADER_BYTES = 64 * 1024
class InvalidCall(ValueError):
    """A call this door cannot read (not from Envoy, or malformed): a 403
    ``invalid_request``, never an allow."""


class Call:
    """One HTTP call from Envoy, checked once: the client's method, the
    request target as sent (``raw_path`` with the prefix, and the query),
    and the headers (lower-case names, repeated ones joined with ',') as
    bytes. Their text (:attr:`headers`, :attr:`target`) is decoded only
    when asked for: a decision-cache hit reads the bytes alone."""

    __slots__ = ("_headers", "_prefix", "body", "method", "path", "query", "raw", "size")

    def __init__(self, method: str, path: bytes, query: bytes, raw: dict[bytes, bytes], prefix: int = 0,
                 size: int = 0) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.raw = raw
        #: The headers' names and values, in bytes.
        self.size = size
        self._prefix = prefix
        self._headers: dict[str, str] | None = None
        #: The body Envoy sent; None until read when one follows the headers
        #: (:func:`read_body`), b"" when none does.
        self.body: bytes | None = b""

    @property
    def target(self) -> str:
        """The client's request target: its path and query, as it sent them."""
        path = self.path[self._prefix:].decode("ascii")
        return f"{path}?{self.query.decode('ascii')}" if self.query else path

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:  # parse() checked that every name is ASCII and every value UTF-8
            self._headers = {name.decode("ascii"): value.decode("utf-8") for name, value in self.raw.items()}
        return self._headers


def _read_headers(pairs: list[tuple[bytes, bytes]]) -> tuple[dict[bytes, bytes], int]:
    """The headers of an ASGI scope by lower-case name, repeated ones joined
    with ',', and their size (names and values). The common call (ASCII,
    lower-case names, none repeated: what Envoy sends) is read by C-level
    steps; any other is read header by header."""
    headers = dict(pairs)
    if len(headers) == len(pairs):  # none repeated
        names, values = b"".join(headers), b"".join(headers.values())
        # islower: no upper-case letter (and at least one letter, so at least one header)
        if names.islower() and names.isascii() and values.isascii():
            return headers, len(names) + len(values)
    headers = {}
    size = 0
    for name, value in pairs:
        size += len(name) + len(value)
        try:
            name.decode("ascii")
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidCall("a header is not UTF-8") from None
        name = name.lower()
        headers[name] = headers[name] + b"," + value if name in headers else value
    return headers, size


def parse(scope: Mapping[str, Any], prefix: bytes) -> Call:
    """The call in an ASGI ``http`` scope; raises :class:`InvalidCall`."""
    raw_path: bytes = scope.get("raw_path") or b""
    if not raw_path.startswith(prefix) or not raw_path.isascii():
        raise InvalidCall("path outside the configured prefix, or not ASCII")
    query: bytes = scope.get("query_string") or b""
    if query and not query.isascii():
        raise InvalidCall("query not ASCII")
    headers, size = _read_headers(scope["headers"])
    if size > MAX_HEADER_BYTES:
        raise InvalidCall("header block over the limit")
    length = headers.get(b"content-length", b"0")
    if b"transfer-encoding" in headers or not length.isdigit():
        raise InvalidCall("a body not framed by content-length")
    method = scope.get("method") or ""
    if not method:
        raise InvalidCall("no method")
    call = Call(method, raw_path, query, headers, len(prefix), size)
    if length != b"0":
        call.body = None  # one follows: read_body reads it
    return call


async def read_body(call: Call, receive: Any, limit: int) -> None:
    """Read the body that follows ``call`` from ASGI ``receive``, at most
    ``limit`` + 1 bytes (more is not read: a body over the limit is
    refused, ``body_too_large``, when a rule reads it)."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        message = await receive()
        if message.get("type") != "http.request":
            raise InvalidCall("the call ended before its body")
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            break
    call.body = b"".join(chunks)[: limit + 1]
