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

    A token never outlives the credential it was made from: its ``exp`` is
    ``iat + ttl`` or the credential's own expiry (a JWT's ``exp``, never
    with the verification leeway added), whichever is sooner. A credential
    already past its own expiry (accepted only thanks to the leeway) gets no
    token: :meth:`limit` tells the caller, who denies (``credential_in_leeway``).

    The same caller (kind, subject, issuer, roles, scopes, peer) gets the
    same token for half its lifetime, so a user moving across paths (each a
    decision-cache miss) costs one signature, not one per request; decisions
    carrying a token are cached no longer than that half, so an upstream
    always receives a token with at least half its lifetime left. A token is
    reused only for a credential that lives at least as long.

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

    @staticmethod
    def limit(identity: Identity) -> float | None:
        """The latest ``exp`` a token for ``identity`` may carry: the
        credential's own expiry, never the leeway after it."""
        own, accepted = identity.credential_exp, identity.expires_at
        if own is None:
            return accepted
        return own if accepted is None else min(own, accepted)

    def token(self, identity: Identity, principal: str, now: float) -> tuple[str, float]:
        """(token, fresh until): a fresh token, or the caller's own while it
        is in the first half of its lifetime and expires no later than this
        credential. "Fresh until" is the end of that half: how long an answer
        carrying the token may be reused. The caller has checked that the
        credential has not expired (``limit(identity) > now``)."""
        key = (identity.kind, identity.subject, identity.issuer, identity.roles, identity.scopes, principal)
        limit = self.limit(identity)
        with self._lock:
            found = self._reuse.get(key)
        if found is not None:
            token, issued, expires = found
            fresh_until = issued + (expires - issued) / 2
            if issued <= now < fresh_until and (limit is None or expires <= limit):
                return token, fresh_until
        issued = int(now)
        expires = issued + int(self.ttl)
        if limit is not None:
            expires = max(issued, min(expires, int(limit)))
        made = (self.sign(identity, principal, issued, expires), issued, expires)
        with self._lock:
            self._reuse[key] = made
        return made[0], issued + (expires - issued) / 2

    def sign(self, identity: Identity, principal: str, issued: int, expires: int) -> str:
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": issued,
            "exp": expires,
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
