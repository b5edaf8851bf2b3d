"""Renewing a session with its refresh token (``session.refresh: true``),
inside the Check, without sending the browser back to the provider.

At the callback the token endpoint's refresh token is kept sealed in a
cookie of its own (:mod:`authz.login.kept`). A request whose session is in
its last ``refresh_before`` seconds (or has just ended, while the browser
still sends the refresh token) is renewed: the refresh token goes to the
token endpoint (one call per refresh token, :func:`authz.login.token.call`,
its answer kept a little while so that concurrent requests of one browser
share it, even when the provider rotates refresh tokens); a new ID token is
verified as at the callback (the same subject), or the session's claims are
kept; the request is decided again with the new session, and the allow
carries the new cookies to the browser (``Set-Cookie`` on allow), never
cached.

A renewal that fails never stretches the session: an allow stays bounded by
the session's own end, a refresh token the endpoint refuses is cleared, and
a session that has ended is sent to sign in as without refresh tokens (its
own redirect, no loop). Until a session is due, its cached allow is kept
no later than the moment it becomes due, so the first request after that is
decided (and renewed) afresh.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from types import MappingProxyType

from authz.decision import Decision
from authz.errors import InvalidSession, Reason
from authz.login import cookies, kept, token
from authz.login.callback import verify_id_token
from authz.login.flow import Login, Waiting
from authz.login.session import SessionTooLarge, open_session, seal_session
from authz.request import Request

log = logging.getLogger("authz.login")

#: How long a refresh token's answer serves other requests that carry the
#: same refresh token (a browser's parallel requests, a page's assets).
SHARED = 30.0


def around(logins: Sequence[Login], request: Request, decision: Decision, now: float, *, may_wait: bool,
           rest: Callable[[Request], Decision]) -> Decision:
    """``decision`` (the policy's on ``request``), renewed when its session
    is due, else bounded to end when it becomes due."""
    header = request.headers.get("cookie")
    for login in logins:
        if login.refresh_before is None or not cookies.holds(header, login.refresh_cookie):
            continue
        if decision.allowed:
            identity = decision.identity
            if identity.source != login.issuer.name or identity.expires_at is None:
                continue
            due = identity.expires_at - login.refresh_before
            if now < due:  # a cached allow ends where the renewal begins
                until = due if decision.valid_until is None else min(decision.valid_until, due)
                return decision._replace(valid_until=until)
        elif decision.reason is not Reason.EXPIRED_SESSION or not cookies.holds(header, login.cookie):
            continue
        return renew(login, request, decision, now, may_wait=may_wait, rest=rest)
    return decision


def renew(login: Login, request: Request, decision: Decision, now: float, *, may_wait: bool,
          rest: Callable[[Request], Decision]) -> Decision:
    """The decision on ``request`` with its session renewed, or ``decision``
    when it cannot be (see the module). Raises :class:`Waiting` (only when
    ``may_wait``) while the token endpoint or the key set is asked."""
    header = request.headers.get("cookie")
    try:
        value = cookies.read(header, login.cookie)
        if value is None:
            return decision
        claims, ends = open_session(login, value)
    except (cookies.CookieError, InvalidSession):
        return decision
    if decision.allowed and decision.identity.expires_at != ends:
        return decision  # decided by another credential of the issuer (a bearer token)
    refresh = kept.read(login.cipher, header, login.refresh_cookie)
    if refresh is None:
        return _failed(login, decision, "the refresh token cookie does not open", clear=True)
    key = hashlib.sha256(b"refresh\0" + refresh.encode("utf-8")).digest()
    try:
        tokens = token.call(login, {"grant_type": "refresh_token", "refresh_token": refresh}, key, request.headers,
                            keep=SHARED, need_id_token=False)
    except token.CallWaiting as waiting:
        if may_wait:
            raise Waiting(waiting.future) from None
        return _failed(login, decision, "no answer from the token endpoint in time", clear=False)
    except token.CallFailed as failed:
        return _failed(login, decision, str(failed), clear=token.rejected(failed))
    if tokens.id_token is not None:
        verified = verify_id_token(login, tokens.id_token, now, may_wait=may_wait)
        if not isinstance(verified, dict):
            reason, detail = verified
            return _failed(login, decision, f"the renewed {detail}", clear=reason is not Reason.JWKS_UNAVAILABLE)
        if verified.get("sub") != claims.get("sub"):
            return _failed(login, decision, "the renewed ID token is another subject's", clear=True)
        claims = verified
    try:
        value, ends = seal_session(login, claims, now)
    except SessionTooLarge as exc:
        return _failed(login, decision, str(exc), clear=True)
    renewed = rest(request._replace(headers=_with_cookie(request, login.cookie, value)))
    if not renewed.allowed:
        return renewed._replace(cacheable=False)
    ttl = ends - now
    held = kept.read(login.cipher, header, login.id_cookie)  # kept only for a provider with an end-session endpoint
    id_token = (tokens.id_token or held) if held is not None else None
    written = [cookies.set_cookie(login.cookie, value, int(ttl)),
               *kept.set_or_clear(login.cipher, header, login.id_cookie, id_token, ttl),
               *kept.set_or_clear(login.cipher, header, login.refresh_cookie, tokens.refresh_token or refresh, ttl)]
    return renewed._replace(client_headers=(*renewed.client_headers, *(("set-cookie", v) for v in written)),
                            cacheable=False)


def _failed(login: Login, decision: Decision, why: str, *, clear: bool) -> Decision:
    """``decision`` as it was (an allow ends with the session; an ended
    session is sent to sign in), the refresh token cleared when ``clear``
    (it will not renew: refused, or not ours)."""
    log.warning("%s: session not renewed: %s", login.issuer.name, why)
    if not clear or not decision.allowed:
        return decision  # a denial sent to sign in clears every kept cookie (authz.login.flow.start)
    cleared = ("set-cookie", cookies.clear_cookie(login.refresh_cookie))
    return decision._replace(client_headers=(*decision.client_headers, cleared), cacheable=False)


def _with_cookie(request: Request, name: str, value: str) -> MappingProxyType[str, str]:
    """The request's headers with cookie ``name`` holding ``value``."""
    headers = dict(request.headers)
    parts = [part.strip() for part in headers.get("cookie", "").split(";")]
    headers["cookie"] = "; ".join(part if part.partition("=")[0] != name else f"{name}={value}"
                                  for part in parts if part)
    return MappingProxyType(headers)
