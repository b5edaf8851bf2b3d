"""An HTTP ext_authz call as Envoy sends it, read from an ASGI ``http``
scope once: the client's method, its request target exactly as sent
(``raw_path``, so ``/a%2Fb`` and ``/a/b`` stay apart) and the headers as
bytes. A call that is not well-formed raises :class:`InvalidCall`."""

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

    __slots__ = ("_headers", "_prefix", "method", "path", "query", "raw", "size")

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
    if headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers:
        raise InvalidCall("a body where none is expected")
    method = scope.get("method") or ""
    if not method:
        raise InvalidCall("no method")
    return Call(method, raw_path, query, headers, len(prefix), size)
