"""What the upstream learns on allow, and what the client sees on deny.

On allow: headers computed by CEL (sanitized: CR, LF, NUL, other controls and
non-ASCII are percent-encoded, never passed raw), headers to remove, and a
short-lived ES256 identity token. Every header authz sets is also stripped
from the client's request when authz has no value for it, so a client-sent
copy never reaches the upstream.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from cachetools import LRUCache
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from authz.cel import EvaluationError, Expression
from authz.errors import OUTCOMES, Reason
from authz.identity.base import Identity
from authz.identity.keys import thumbprint
from authz.policy import View

MAX_HEADER_VALUE = 8192
MAX_ADDED_BYTES = 60 * 1024
MAX_ADDED_HEADERS = 100

_SAFE_VALUE = re.compile(r"[\x20-\x24\x26-\x7e]*")  # printable ASCII except '%'


def sanitize_header_value(value: str) -> str:
    """Printable ASCII passes unchanged; anything else (and '%', so the
    result decodes unambiguously) is percent-encoded as UTF-8."""
    if _SAFE_VALUE.fullmatch(value):
        return value
    out = []
    for char in value:
        if "\x20" <= char <= "\x7e" and char != "%":
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# Built once: ``json.dumps`` with options builds a new encoder per call, and
# the signature scheme object is immutable.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)
_ES256 = ec.ECDSA(hashes.SHA256())


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = key.public_numbers()
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64(numbers.x.to_bytes(32, "big")),
        "y": _b64(numbers.y.to_bytes(32, "big")),
    }
    return {**jwk, "kid": thumbprint(jwk), "alg": "ES256", "use": "sig"}


def load_ec_key(path: str) -> ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey:
    """A P-256 key from a PEM file (private, or public for extra JWKS keys).
    Raises ValueError with a readable message."""
    with open(path, "rb") as handle:
        data = handle.read()
    key: Any
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            raise ValueError("not a PEM EC key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("identity tokens are ES256: the key must be an EC P-256 key")
    return key


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
        object.__setattr__(self, "_header_b64", _b64(header.encode()))
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
        payload = _b64(_COMPACT_JSON.encode(claims).encode("ascii"))
        signing_input = f"{self._header_b64}.{payload}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode("ascii"), _ES256))
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@dataclass(frozen=True, eq=False)
class ResponsePlan:
    headers: tuple[tuple[str, Expression], ...] = ()
    remove: tuple[str, ...] = ()
    identity_token: IdentityTokenSigner | None = None

    @property
    def header_names(self) -> tuple[str, ...]:
        names = [name for name, _ in self.headers]
        if self.identity_token is not None:
            names.append(self.identity_token.header)
        return tuple(names)

    def jwks(self) -> dict[str, Any]:
        return {"keys": list(self.identity_token.jwks) if self.identity_token else []}

    def build(self, view: View) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...], list[str], float | None]:
        """(headers to set, headers to remove, notes, fresh until) for an
        allowed request; "fresh until" bounds how long the answer may be
        reused (the identity token's reuse window), None when unbounded."""
        set_headers: list[tuple[str, str]] = []
        remove = list(self.remove)
        notes: list[str] = []
        total = 0
        for name, expression in self.headers:
            try:
                value = expression.evaluate(view.variables(expression.roots))
            except EvaluationError as exc:
                notes.append(f"header {name}: {exc}")
                remove.append(name)
                continue
            if not isinstance(value, str) or not value:
                notes.append(f"header {name}: no string value")
                remove.append(name)
                continue
            value = sanitize_header_value(value)
            total += len(name) + len(value)
            if len(value) > MAX_HEADER_VALUE or total > MAX_ADDED_BYTES or len(set_headers) >= MAX_ADDED_HEADERS:
                notes.append(f"header {name}: over Envoy's header limits, dropped")
                remove.append(name)
                continue
            set_headers.append((name, value))
        signer = self.identity_token
        fresh_until = None
        if signer is not None:
            if view.identity.authenticated:
                token, issued = signer.token(view.identity, view.request.source_principal, view.now)
                set_headers.append((signer.header, token))
                fresh_until = issued + signer.reuse_window
            else:
                remove.append(signer.header)
        return tuple(set_headers), tuple(dict.fromkeys(remove)), notes, fresh_until


def www_authenticate(reason: Reason) -> str:
    """The RFC 6750 challenge for a 401 with this reason."""
    if reason == Reason.MISSING_CREDENTIAL:
        return 'Bearer realm="authz"'
    return f'Bearer realm="authz", error="invalid_token", error_description="{reason.value}"'


def denied_body(reason: Reason, request_id: str | None) -> bytes:
    """The JSON body of a denial; it never echoes a credential or claim."""
    outcome = OUTCOMES[reason]
    return json.dumps(
        {"error": outcome.error, "reason": reason.value, "request_id": request_id},
        separators=(",", ":"),
    ).encode("utf-8")
