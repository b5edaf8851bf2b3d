"""The identity token: a short-lived ES256 JWT that tells the upstream who
called, signed by authz (Authorino calls it a wristband)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from cachetools import LRUCache
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from authz.identity.base import Identity
from authz.identity.jws import b64url_encode

# Built once: ``json.dumps`` with options builds a new encoder per call, and
# the signature scheme object is immutable.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)
_ES256 = ec.ECDSA(hashes.SHA256())


@dataclass(frozen=True, eq=False)
class IdentityTokenSigner:
    """Signs the short-lived ES256 identity token upstreams receive.

    The same caller (kind, subject, issuer, roles, scopes, peer) gets the
    same token for half its lifetime, so a user moving across paths (each a
    decision-cache miss) costs one signature, not one per request; decisions
    carrying a token are cached no longer than that half, so an upstream
    always receives a token with at least half its lifetime left.

    The JWS is assembled here rather than by ``jwt.encode``, whose JSON and
    header handling cost more than the ECDSA signature itself
    (``benchmarks/core_bench.py``); ``cryptography`` does the signing.
    """

    header: str
    issuer: str
    audience: str
    ttl: float
    key: ec.EllipticCurvePrivateKey
    kid: str
    jwks: tuple[dict[str, str], ...]
    reuse_entries: int = 10_000
    _header_b64: str = field(init=False, repr=False)
    _reuse: LRUCache = field(init=False, repr=False)  # type: ignore[type-arg]
    _lock: threading.Lock = field(init=False, repr=False)

    def __post_init__(self) -> None:
        header = json.dumps({"alg": "ES256", "kid": self.kid, "typ": "JWT"}, separators=(",", ":"))
        object.__setattr__(self, "_header_b64", b64url_encode(header.encode()))
        object.__setattr__(self, "_reuse", LRUCache(self.reuse_entries))
        object.__setattr__(self, "_lock", threading.Lock())

    @property
    def reuse_window(self) -> float:
        return self.ttl / 2

    def token(self, identity: Identity, principal: str, now: float) -> tuple[str, int]:
        """(token, iat): a fresh one, or the caller's own from less than
        ``reuse_window`` ago."""
        key = (identity.kind, identity.subject, identity.issuer, identity.roles, identity.scopes, principal)
        with self._lock:
            found = self._reuse.get(key)
        if found is not None and 0 <= now - found[1] < self.reuse_window:
            return found  # type: ignore[no-any-return]
        issued = int(now)
        made = (self.sign(identity, principal, issued), issued)
        with self._lock:
            self._reuse[key] = made
        return made

    def sign(self, identity: Identity, principal: str, issued: int) -> str:
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": issued,
            "exp": issued + int(self.ttl),
            "kind": identity.kind,
            "roles": sorted(identity.roles),
            "scopes": list(identity.scopes),
        }
        if identity.subject is not None:
            claims["sub"] = identity.subject
        if identity.issuer is not None:
            claims["idp"] = identity.issuer
        if principal:
            claims["peer"] = principal
        payload = b64url_encode(_COMPACT_JSON.encode(claims).encode("ascii"))
        signing_input = f"{self._header_b64}.{payload}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode("ascii"), _ES256))
        return f"{signing_input}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
