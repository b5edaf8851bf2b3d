"""JWT bearer tokens from OIDC issuers (docs/security.md A-C).

The order of checks is deliberate: everything that can be decided from the
token's text (shape, header, claims, time, audience) is decided before a key
set is consulted, so malformed or mis-addressed tokens never cost a JWKS fetch
or a signature check. The key set is chosen by the configured issuer that the
``iss`` claim names, never by anything else the token offers (``jku``, ``jwk``,
``x5u`` and ``x5c`` are ignored).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from authz.errors import ExpiredToken, InvalidToken, KeysUnavailable, UnknownIssuer
from authz.identity.base import Identity, TokenCache
from authz.identity.jws import ParsedToken, check_header, check_signature_shape, parse_compact
from authz.identity.keys import KeySet
from authz.request import CookieError, Request, cookie_value


class KeyProvider(Protocol):
    """Where an issuer's keys come from (a file, or a cached remote set)."""

    def current(self) -> KeySet | None:
        """The key set to verify with now, or None when there is none usable."""
        ...

    def wait_for_keys(self) -> Any:
        """A future that completes when a first key set arrives, or None."""
        ...

    def refetch_unknown_kid(self) -> Any:
        """A future for a refetch shared by all callers, or None while the
        refetch cooldown holds."""
        ...

    def status(self) -> dict[str, Any]:
        """What ``/readyz`` and metrics report about the key set."""
        ...

    def start(self) -> None:
        """Begin background refreshes (a server calls this; nothing else needs to)."""
        ...

    def stop(self) -> None:
        """End background refreshes."""
        ...


@dataclass(frozen=True, slots=True)
class TokenLocation:
    """Where a token is found: a header (with an optional scheme prefix) or a cookie."""

    header: str | None = None
    prefix: str = ""
    cookie: str | None = None

    @property
    def header_name(self) -> str:
        return self.header if self.header is not None else "cookie"

    @property
    def where(self) -> str:
        """How ``authz explain`` names the place: ``header authorization``, ``cookie access_token``."""
        return f"cookie {self.cookie}" if self.cookie else f"header {self.header}"

    def extract(self, headers: Mapping[str, str]) -> str | None:
        """The token, or None when this location holds none. Raises
        InvalidToken when it holds something that cannot be one token (two
        credentials joined by Envoy, an empty value, a repeated cookie)."""
        if self.cookie is not None:
            return _cookie_value(headers.get("cookie"), self.cookie)
        value = headers.get(self.header)  # type: ignore[arg-type]
        if value is None:
            return None
        if self.prefix:
            if value[: len(self.prefix)].lower() != self.prefix.lower():
                return None
            value = value[len(self.prefix):]
        if not value or "," in value or " " in value or "\t" in value:
            raise InvalidToken("empty value or more than one credential in the header")
        return value


def _cookie_value(header: str | None, name: str) -> str | None:
    try:
        return cookie_value(header, name)
    except CookieError as exc:
        raise InvalidToken("the token cookie is set more than once" if exc.twice else "empty token cookie") from None


@dataclass(frozen=True, slots=True, eq=False)
class JwtIssuer:
    """One configured issuer, compiled."""

    name: str
    issuer: str
    audiences: frozenset[str]
    algorithms: frozenset[str]
    leeway: float
    roles_claim: tuple[str, ...]
    scopes_claim: tuple[str, ...]
    locations: tuple[TokenLocation, ...]
    token_types: frozenset[str] | None
    max_token_size: int
    keys: KeyProvider


def claim_at(claims: Mapping[str, Any], path: Sequence[str]) -> Any:
    """The value at a dotted claim path. A key containing dots (Auth0's
    namespaced ``https://example.com/roles``) is tried whole first."""
    joined = ".".join(path)
    if joined in claims:
        return claims[joined]
    node: Any = claims
    index = 0
    while index < len(path):
        if not isinstance(node, Mapping):
            return None
        # Longest run of segments that is itself a key at this level.
        for end in range(len(path), index, -1):
            key = ".".join(path[index:end])
            if key in node:
                node = node[key]
                index = end
                break
        else:
            return None
    return node


def string_list(value: Any) -> list[str]:
    """A roles or scopes claim as strings: a space-separated string or a list
    (its non-strings left out); anything else, none."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def _numeric_date(payload: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = payload.get(name)
    if value is None:
        if name in payload or required:
            raise InvalidToken(f"missing or null {name}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"{name} is not a number")
    try:
        return float(value)
    except OverflowError:
        # An integer beyond any float (JSON allows 1 followed by 400 zeros).
        raise InvalidToken(f"{name} is out of range") from None


def _normal_type(value: str) -> str:
    value = value.lower()
    return value[len("application/"):] if value.startswith("application/") else value


def verify_claims(issuer: JwtIssuer, header: Mapping[str, Any], payload: Mapping[str, Any], now: float) -> float:
    """Check type, time and audience; return the expiry as accepted (exp +
    leeway). The token's own ``exp`` is what an identity token may assert."""
    if issuer.token_types is not None:
        typ = header.get("typ")
        if not isinstance(typ, str) or _normal_type(typ) not in issuer.token_types:
            raise InvalidToken("token type (typ) not accepted by this issuer")
    exp = _numeric_date(payload, "exp", required=True)
    nbf = _numeric_date(payload, "nbf", required=False)
    iat = _numeric_date(payload, "iat", required=False)
    assert exp is not None
    if exp + issuer.leeway <= now:
        raise ExpiredToken("token expired")
    if nbf is not None and nbf - issuer.leeway > now:
        raise InvalidToken("token not valid yet (nbf)")
    if iat is not None and iat - issuer.leeway > now:
        raise InvalidToken("token issued in the future (iat)")
    aud = payload.get("aud")
    if isinstance(aud, str):
        audiences = [aud]
    elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        audiences = aud
    else:
        raise InvalidToken("missing, empty or malformed aud")
    if not issuer.audiences.intersection(audiences):
        raise InvalidToken("audience not accepted")
    sub = payload.get("sub")
    if sub is not None and not isinstance(sub, str):
        raise InvalidToken("non-string sub")
    return exp + issuer.leeway


class JwtSource:
    """Tokens at one location, for the issuers that read it."""

    kind = "jwt"

    def __init__(self, location: TokenLocation, issuers: Sequence[JwtIssuer], *,
                 known_issuers: frozenset[str] = frozenset()) -> None:
        self.location = location
        self.issuers = {issuer.issuer: issuer for issuer in issuers}
        # Every configured issuer: ``unknown_issuer`` is only for an iss that
        # none has, not for one that reads its tokens elsewhere.
        self.known_issuers = known_issuers | frozenset(self.issuers)
        self.max_token_size = max(issuer.max_token_size for issuer in issuers)
        # Cache keys are per location: the same token may be accepted by
        # different issuers in different places.
        self._cache_prefix = hashlib.sha256(repr(location).encode()).digest()[:4]

    @property
    def header_name(self) -> str:
        return self.location.header_name

    @property
    def name(self) -> str:
        return f"jwt ({self.location.where})"

    def authenticate(self, request: Request, *, now: float, cache: TokenCache | None) -> Identity | None:
        """The identity of the token at this location, from ``cache`` when it
        was verified before; None when there is none. Failures are never
        cached."""
        token = self.location.extract(request.headers)
        if token is None:
            return None
        if len(token) > self.max_token_size:
            raise InvalidToken("token longer than the configured maximum")
        if cache is None:
            return self.verify(token, now=now)
        digest = self._cache_prefix + hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        hit = cache.get(digest, now)
        if hit is not None:
            return hit
        epoch = cache.epoch  # before any key is read: a key change from here on refuses the put
        identity = self.verify(token, now=now)
        cache.put(digest, identity, now, epoch=epoch)
        return identity

    def verify(self, token: str, *, now: float) -> Identity:
        parsed = parse_compact(token, max_size=self.max_token_size)
        iss = parsed.payload.get("iss")
        if not isinstance(iss, str):
            raise InvalidToken("missing or non-string iss")
        issuer = self.issuers.get(iss)
        if issuer is None:
            if iss in self.known_issuers:
                raise InvalidToken("this issuer's tokens are not accepted from this location")
            raise UnknownIssuer("no configured issuer has this iss")
        if len(token) > issuer.max_token_size:
            raise InvalidToken("token longer than the configured maximum")
        alg = check_header(parsed.header, issuer.algorithms)
        check_signature_shape(alg, parsed.signature)
        expires_at = verify_claims(issuer, parsed.header, parsed.payload, now)
        self._verify_signature(issuer, parsed, alg)
        return _identity(issuer, parsed.payload, expires_at)

    @staticmethod
    def _verify_signature(issuer: JwtIssuer, parsed: ParsedToken, alg: str) -> None:
        """Raises a CredentialError; when a key-set fetch under way could
        change the answer, the error carries its future (``retry``)."""
        keys = issuer.keys.current()
        if keys is None:
            raise KeysUnavailable("no usable key set for the issuer", retry=issuer.keys.wait_for_keys())
        kid = parsed.header.get("kid")
        if not keys.has_kid(kid):
            raise InvalidToken("unknown kid", retry=issuer.keys.refetch_unknown_kid())
        if not keys.verify(kid, alg, parsed.signing_input, parsed.signature):
            raise InvalidToken("signature does not verify")


def _identity(issuer: JwtIssuer, payload: Mapping[str, Any], expires_at: float) -> Identity:
    # verify_claims checked exp is a number: the leeway is for accepting only.
    return claims_identity(issuer, payload, "jwt", expires_at, float(payload["exp"]))


class ClaimsIssuer(Protocol):
    """What :func:`claims_identity` reads of an issuer: its names and where
    its claims hold roles and scopes (a JWT issuer, an introspection issuer)."""

    @property
    def name(self) -> str: ...
    @property
    def issuer(self) -> str: ...
    @property
    def roles_claim(self) -> Sequence[str]: ...
    @property
    def scopes_claim(self) -> Sequence[str]: ...


def claims_identity(issuer: ClaimsIssuer, claims: Mapping[str, Any], kind: str, expires_at: float | None,
                    credential_exp: float | None) -> Identity:
    """The identity verified ``claims`` of ``issuer`` make: a JWT's payload,
    an introspection answer, a browser session's claims."""
    sub = claims.get("sub")
    return Identity(
        kind=kind,
        subject=sub if isinstance(sub, str) else None,
        issuer=issuer.issuer,
        source=issuer.name,
        roles=frozenset(string_list(claim_at(claims, issuer.roles_claim))),
        scopes=tuple(string_list(claim_at(claims, issuer.scopes_claim))),
        claims=claims,
        expires_at=expires_at,
        credential_exp=credential_exp,
    )
