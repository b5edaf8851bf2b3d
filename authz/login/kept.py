"""The provider's tokens kept beside the session, each sealed in a cookie of
its own (the cookie's name is the associated data, so neither ever opens as
the session or as the other): the ID token, sent as ``id_token_hint`` when
the browser signs out, and the refresh token, which renews the session
(:mod:`authz.login.renew`).

Either is left out when its sealed value would not fit a browser's cookie
(:data:`authz.login.cookies.MAX_COOKIE`): the session works without it,
and the sign-out then carries no hint (logged once per sign-in).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from authz.login import cookies
from authz.login.cipher import Cipher, SealError
from authz.login.cookies import MAX_COOKIE

log = logging.getLogger("authz.login")


def seal(cipher: Cipher, name: str, token: str, ttl: float) -> str | None:
    """The ``Set-Cookie`` value keeping ``token`` in cookie ``name`` for
    ``ttl`` seconds; None (logged) when it would not fit a cookie."""
    value = cipher.seal(token.encode("utf-8"), name)
    if len(value) > MAX_COOKIE:
        log.warning("the token is too large for cookie %s (%d bytes sealed): not kept", name, len(value))
        return None
    return cookies.set_cookie(name, value, int(ttl))


def read(cipher: Cipher, header: str | None, name: str) -> str | None:
    """The token kept in cookie ``name`` of the Cookie ``header``; None when
    there is none, or it does not open (tampered, another cookie's, a removed key)."""
    try:
        value = cookies.read(header, name)
        if value is None or len(value) > MAX_COOKIE:
            return None
        return cipher.open(value, name).decode("utf-8")
    except (cookies.CookieError, SealError, UnicodeDecodeError):
        return None


def set_or_clear(cipher: Cipher, header: str | None, name: str, token: str | None, ttl: float) -> list[str]:
    """The ``Set-Cookie`` values that keep ``token`` (None: none) in cookie
    ``name``, or, when it is not kept, clear one the browser holds."""
    if token is not None and (kept := seal(cipher, name, token, ttl)) is not None:
        return [kept]
    return [cookies.clear_cookie(name)] if cookies.holds(header, name) else []


def clear_held(names: Iterable[str], header: str | None) -> list[str]:
    """The ``Set-Cookie`` values clearing the cookies ``names`` the browser holds."""
    return [cookies.clear_cookie(name) for name in names if cookies.holds(header, name)]
