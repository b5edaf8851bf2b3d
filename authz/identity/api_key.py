"""API keys, stored as SHA-256 hashes and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from authz.errors import InvalidApiKey
from authz.identity.base import Identity, TokenCache
from authz.request import Request


@dataclass(frozen=True, slots=True)
class ApiKeyEntry:
    subject: str
    digest: bytes
    roles: frozenset[str]


class ApiKeySource:
    """Keys presented in one header (default ``x-api-key``)."""

    kind = "api_key"

    def __init__(self, header: str, entries: tuple[ApiKeyEntry, ...]) -> None:
        self.header = self.header_name = header
        self.entries = entries
        self.name = f"api_key (header {header})"

    def authenticate(self, request: Request, *, now: float, cache: TokenCache | None) -> Identity | None:
        """The key's identity; None without a key. A key costs one hash, so
        ``cache`` is not used."""
        value = request.headers.get(self.header)
        if value is None:
            return None
        if not value or not value.isascii() or "," in value or not value.isprintable():
            raise InvalidApiKey("empty, non-ASCII or repeated API key")
        digest = hashlib.sha256(value.encode("ascii")).digest()
        # Every entry is compared, with no early exit, so the time taken does
        # not depend on which entry (if any) matches.
        match: ApiKeyEntry | None = None
        for entry in self.entries:
            if hmac.compare_digest(digest, entry.digest):
                match = entry
        if match is None:
            raise InvalidApiKey("no configured key matches")
        return Identity(kind="api_key", subject=match.subject, source="api_key", roles=match.roles)
