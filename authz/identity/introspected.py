"""Opaque access tokens checked by OAuth 2.0 token introspection (RFC 7662;
docs/security.md 80-83).

An issuer with ``introspection:`` sends the tokens it reads to its
endpoint, authenticated as its client (``client_secret_basic``, or
``private_key_jwt``: an assertion PyJWT signs per call). What may be sent:

- a token that is not a JWT, to the one introspection issuer reading that
  location;
- a JWT whose ``iss`` is that introspection issuer's own;
- never a JWT whose ``iss`` names another issuer or none: a stranger's
  token is not handed to a third party, and a forged token never costs an
  outside call (``unknown_issuer``, as for JWT issuers).

Answers are kept by :class:`authz.outside.calls.KeyedCalls` under a hash of
the token (never the token): an active one until its ``exp`` (at most
``max_ttl``, then asked again; while the endpoint fails it stands in up to
``max_stale`` longer, never past ``exp``), an inactive one for
``negative_ttl``. A token never seen active fails closed
(``introspection_unavailable``) within the call's timeout.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from authz.errors import (
    CredentialError,
    ExpiredToken,
    InactiveToken,
    IntrospectionUnavailable,
    InvalidToken,
    UnknownIssuer,
)
from authz.identity.base import Identity, TokenCache
from authz.identity.jws import decode_compact, strict_json_object
from authz.identity.jwt import TokenLocation, claims_identity
from authz.outside.calls import Answer, CallFailed, CallWaiting, KeyedCalls
from authz.outside.http import FetchError, post_form
from authz.request import Request

if TYPE_CHECKING:
    import aiohttp

#: The largest introspection answer read.
MAX_ANSWER_BYTES = 64 * 1024
#: ``token_type`` values of an access token (compared lower-cased); an
#: answer without one is taken as an access token.
ACCESS_TOKEN_TYPES = frozenset({"bearer", "access_token", "urn:ietf:params:oauth:token-type:access_token"})
#: Lifetime of a ``private_key_jwt`` client assertion.
ASSERTION_TTL = 60


@dataclass(frozen=True, slots=True)
class Rejection:
    """A cached refusal: the error to raise and what it says."""

    error: type[CredentialError]
    detail: str


class ClientAuth:
    """How authz authenticates to the endpoint: ``client_secret_basic``
    (a secret read from a file when the policy loads: a change to the file
    reloads the policy) or ``private_key_jwt`` (RFC 7523)."""

    def __init__(self, client_id: str, *, secret: str | None = None, key: Any = None, alg: str = "RS256",
                 kid: str | None = None, audience: str = "") -> None:
        self.client_id = client_id
        self._basic = None
        if secret is not None:
            pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
            self._basic = "Basic " + base64.b64encode(pair).decode("ascii")
        self._key = key
        self._alg = alg
        self._kid = kid
        self._audience = audience

    def apply(self, form: dict[str, str], headers: dict[str, str]) -> None:
        if self._basic is not None:
            headers["authorization"] = self._basic
            return
        import jwt

        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self._audience, "iat": now,
                  "exp": now + ASSERTION_TTL, "jti": uuid.uuid4().hex}
        extra = {"kid": self._kid} if self._kid else None
        form["client_id"] = self.client_id
        form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        form["client_assertion"] = jwt.encode(claims, self._key, algorithm=self._alg, headers=extra)


@dataclass(frozen=True, slots=True, eq=False)
class IntrospectionIssuer:
    """One issuer whose tokens are introspected, compiled."""

    name: str
    issuer: str
    audiences: frozenset[str]
    endpoint: str
    auth: ClientAuth
    roles_claim: tuple[str, ...]
    scopes_claim: tuple[str, ...]
    locations: tuple[TokenLocation, ...]
    max_token_size: int
    max_ttl: float
    negative_ttl: float
    max_stale: float
    calls: KeyedCalls[Identity | Rejection]

    def key(self, token: str) -> bytes:
        """The cache key: this issuer's name and the token's SHA-256."""
        return hashlib.sha256(f"{self.name}\0{token}".encode("utf-8", "surrogatepass")).digest()

    async def introspect(self, session: aiohttp.ClientSession, token: str) -> Answer[Identity | Rejection]:
        form = {"token": token, "token_type_hint": "access_token"}
        headers: dict[str, str] = {}
        self.auth.apply(form, headers)
        status, body = await post_form(session, self.endpoint, form, max_bytes=MAX_ANSWER_BYTES, headers=headers)
        if status != 200:
            raise FetchError(f"introspection answered HTTP {status}")
        if not isinstance(body, dict) or not isinstance(body.get("active"), bool):
            raise FetchError("introspection answer is not a JSON object with a boolean 'active'")
        size = len(json.dumps(body))
        return judge(self, body, time.time(), size)


def judge(issuer: IntrospectionIssuer, body: Mapping[str, Any], now: float,
          size: int = 0) -> Answer[Identity | Rejection]:
    """What one introspection answer means, and for how long it holds."""

    def refuse(error: type[CredentialError], detail: str) -> Answer[Identity | Rejection]:
        return Answer(Rejection(error, detail), issuer.negative_ttl, 0.0, size)

    if body.get("active") is not True:
        return refuse(InactiveToken, "introspection: the token is not active")
    iss = body.get("iss")
    if iss is not None and iss != issuer.issuer:
        return refuse(InvalidToken, "introspection answer names another issuer")
    aud = body.get("aud")
    if aud is not None:
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
        if not audiences or not all(isinstance(a, str) for a in audiences):
            return refuse(InvalidToken, "introspection answer has a malformed aud")
        if not issuer.audiences.intersection(audiences):
            return refuse(InvalidToken, "audience not accepted")
    token_type = body.get("token_type")
    if token_type is not None and (not isinstance(token_type, str) or token_type.lower() not in ACCESS_TOKEN_TYPES):
        return refuse(InvalidToken, "introspection says this is not an access token")
    exp = _number(body.get("exp"))
    nbf = _number(body.get("nbf"))
    if body.get("exp") is not None and exp is None:
        return refuse(InvalidToken, "introspection answer has a malformed exp")
    if exp is not None and exp <= now:
        return refuse(ExpiredToken, "token expired")
    if nbf is not None and nbf > now:
        return refuse(InvalidToken, "token not valid yet (nbf)")
    identity = claims_identity(issuer, dict(body), "introspected", exp, exp)
    if exp is None:  # nothing says how long it stays active: never past max_ttl, never stale
        return Answer(identity, issuer.max_ttl, 0.0, size)
    left = exp - now
    ttl = min(issuer.max_ttl, left)
    return Answer(identity, ttl, max(0.0, min(issuer.max_stale, left - ttl)), size)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _jwt_issuer(token: str, max_size: int) -> str | None:
    """The ``iss`` of a token shaped as a JWT (three base64url parts whose
    first decodes to a JSON object), or None for an opaque token. Raises
    InvalidToken for a JWT with no usable ``iss``."""
    if token.count(".") != 2 or not token.startswith("eyJ"):
        return None
    try:
        payload = strict_json_object(decode_compact(token, max_size=max_size).payload, "payload")
    except InvalidToken:
        return None
    iss = payload.get("iss")
    if not isinstance(iss, str):
        raise InvalidToken("missing or non-string iss")
    return iss


class IntrospectedSource:
    """Tokens at one location that introspection issuers read. Asked before
    the JWT issuers' source of the same location, it leaves to it (returns
    None) every JWT that is not an introspection issuer's own."""

    kind = "introspected"

    def __init__(self, location: TokenLocation, issuers: Sequence[IntrospectionIssuer], *, jwt_here: bool,
                 known_issuers: frozenset[str]) -> None:
        self.location = location
        self.issuers = {issuer.issuer: issuer for issuer in issuers}
        #: The issuer of tokens that are not JWTs (load refuses two at one location).
        self.opaque = issuers[0]
        self.jwt_here = jwt_here
        self.known_issuers = known_issuers
        self.max_token_size = max(issuer.max_token_size for issuer in issuers)

    @property
    def header_name(self) -> str:
        return self.location.header_name

    @property
    def name(self) -> str:
        return f"introspection ({self.location.where})"

    def authenticate(self, request: Request, *, now: float, cache: TokenCache | None) -> Identity | None:
        token = self.location.extract(request.headers)
        if token is None:
            return None
        if len(token) > self.max_token_size:
            raise InvalidToken("token longer than the configured maximum")
        iss = _jwt_issuer(token, self.max_token_size)
        if iss is None:
            issuer = self.opaque
        else:
            found = self.issuers.get(iss)
            if found is None:
                if self.jwt_here:
                    return None  # the JWT issuers' source decides
                if iss in self.known_issuers:
                    raise InvalidToken("this issuer's tokens are not accepted from this location")
                raise UnknownIssuer("no configured issuer has this iss")
            issuer = found
        return self._answer(issuer, token, now)

    @staticmethod
    def _answer(issuer: IntrospectionIssuer, token: str, now: float) -> Identity:
        try:
            verdict = issuer.calls.get(issuer.key(token), lambda session, _trace: issuer.introspect(session, token))
        except CallWaiting as waiting:
            raise IntrospectionUnavailable("introspection under way", retry=waiting.future) from None
        except CallFailed as failed:
            raise IntrospectionUnavailable(f"introspection failed: {failed}") from None
        if isinstance(verdict, Rejection):
            raise verdict.error(verdict.detail)
        identity: Identity = verdict
        if identity.expires_at is not None and identity.expires_at <= now:
            raise ExpiredToken("token expired")
        return identity
