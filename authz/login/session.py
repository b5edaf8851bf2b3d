"""The session: an ID token's claims sealed in a cookie, and the credential
source that reads it back (:class:`authz.identity.credential.Credential`).

A session is an identity like a verified token of its issuer (kind
``jwt``, so rules written for that issuer's tokens hold for it): roles and
scopes come from the issuer's ``roles_claim`` and ``scopes_claim`` of the
claims kept. It carries its own end (``session.ttl`` from sign-in), which is
also its ``exp`` for the identity token. The sealed value must fit a
browser's cookie (:data:`MAX_COOKIE`): the ID token's protocol claims are
dropped, then, if still too large, every claim but the subject, the issuer,
the roles and scopes claims and ``email``/``name``; a session that cannot
fit is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from authz.errors import ExpiredSession, InvalidSession
from authz.identity.base import Identity, TokenCache
from authz.identity.jwt import claims_identity
from authz.login import cookies
from authz.login.cipher import SealError
from authz.login.cookies import MAX_COOKIE

if TYPE_CHECKING:
    from authz.login.flow import Login
    from authz.request import Request

#: ID token claims that say nothing of the user: never kept.
PROTOCOL_CLAIMS = frozenset({"nonce", "at_hash", "c_hash", "s_hash", "sid", "auth_time", "acr", "amr", "azp"})
_SMALL = ("sub", "iss", "email", "name")


class SessionTooLarge(ValueError):
    pass


def seal_session(login: Login, claims: Mapping[str, Any], now: float) -> tuple[str, float]:
    """The session cookie's value for ``claims`` and its end."""
    ends = now + login.ttl
    kept = {k: v for k, v in claims.items() if k not in PROTOCOL_CLAIMS}
    for attempt in (kept, _minimal(login, kept)):
        text = json.dumps({"c": attempt, "e": ends}, separators=(",", ":")).encode("utf-8")
        value = login.cipher.seal(text, login.cookie)
        if len(value) <= MAX_COOKIE:
            return value, ends
    raise SessionTooLarge("the ID token's claims do not fit a cookie")


def open_session(login: Login, value: str) -> tuple[dict[str, Any], float]:
    """The claims and the end of a session cookie's value, ended or not;
    InvalidSession when it does not open or holds no session."""
    try:
        document = json.loads(login.cipher.open(value, login.cookie))
    except SealError as exc:
        raise InvalidSession(f"session cookie: {exc}") from None
    except ValueError:
        raise InvalidSession("session cookie: not a session") from None
    if not isinstance(document, dict):
        raise InvalidSession("session cookie: not a session")
    claims, ends = document.get("c"), document.get("e")
    if not isinstance(claims, dict) or isinstance(ends, bool) or not isinstance(ends, int | float):
        raise InvalidSession("session cookie: not a session")
    return claims, float(ends)


def _minimal(login: Login, claims: Mapping[str, Any]) -> dict[str, Any]:
    roots = {login.issuer.roles_claim[0], login.issuer.scopes_claim[0], ".".join(login.issuer.roles_claim),
             ".".join(login.issuer.scopes_claim), *_SMALL}
    return {k: v for k, v in claims.items() if k in roots}


class SessionSource:
    """The session cookie of one login, read as an identity of its issuer."""

    kind = "jwt"
    header_name = "cookie"
    #: What the flow reads besides the cookie (the decision cache keys on
    #: them): whether a request is a browser navigation, and where it goes.
    reads = frozenset({("request", "method"), ("request", "headers", "accept"), ("request", "scheme"),
                       ("request", "host")})

    def __init__(self, login: Login) -> None:
        self.login = login
        self._prefix = hashlib.sha256(b"session\0" + login.cookie.encode()).digest()[:4]

    @property
    def name(self) -> str:
        return f"session (cookie {self.login.cookie})"

    def authenticate(self, request: Request, *, now: float, cache: TokenCache | None) -> Identity | None:
        try:
            value = cookies.read(request.headers.get("cookie"), self.login.cookie)
        except cookies.CookieError as exc:
            raise InvalidSession(str(exc)) from None
        if value is None:
            return None
        if len(value) > MAX_COOKIE:
            raise InvalidSession("session cookie longer than any authz writes")
        if cache is None:
            return self.open(value, now)
        digest = self._prefix + hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()
        hit = cache.get(digest, now)
        if hit is not None:
            return hit
        epoch = cache.epoch
        identity = self.open(value, now)
        cache.put(digest, identity, now, epoch=epoch)
        return identity

    def open(self, value: str, now: float) -> Identity:
        claims, ends = open_session(self.login, value)
        if ends <= now:
            raise ExpiredSession("session ended")
        return claims_identity(self.login.issuer, claims, "jwt", float(ends), float(ends))
