"""A login, compiled, and the step of its flow that needs no outside call
of its own: start (a 302 to the provider). Each step is a function of the
request that returns the decision carrying its reply (status, ``Location``,
``Set-Cookie``), never cached.

The login state (the ``state``, ``nonce`` and PKCE verifier, where the
browser was going, the redirect URI) lives in its own short-lived sealed
cookie (:data:`STATE_TTL`) beside the session cookie, so the worker that
finishes a callback need not be the one that started it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from cachetools import TTLCache

from authz.decision import Decision
from authz.denials import Denial
from authz.errors import Reason
from authz.identity.base import ANONYMOUS, Identity
from authz.identity.jwt import JwtIssuer, JwtSource
from authz.login import cookies, kept
from authz.login.cipher import Cipher, SealError, b64url
from authz.login.discovery import Discovery
from authz.login.returns import safe_return
from authz.matchers import Globs
from authz.outside.calls import KeyedCalls, all_of
from authz.request import Request

#: How long a sign-in may take, from the redirect to the provider to the callback.
STATE_TTL = 600


@dataclass(frozen=True, eq=False)
class Login:
    """One issuer's ``login:``. ``issuer`` is the issuer as the ID token's
    verifier sees it: its key set and settings, with the client as the only
    audience."""

    issuer: JwtIssuer
    client_id: str
    client_secret: str | None
    scopes: tuple[str, ...]
    callback_path: str
    logout_path: str
    #: Where browser navigations are sent to sign in; None: every path.
    paths: Globs | None
    ttl: float
    #: The cookie names as sent (``__Host-`` prefixed).
    cookie: str
    state_cookie: str
    #: The ID token's cookie (:mod:`authz.login.kept`): the hint at sign-out.
    id_cookie: str
    #: The refresh token's cookie (:mod:`authz.login.renew`).
    refresh_cookie: str
    cipher: Cipher
    discovery: Discovery
    #: The token endpoint's calls (one per code, one per refresh token).
    calls: KeyedCalls[Any]
    verifier: JwtSource
    #: Renew a session with its refresh token this many seconds before it
    #: ends (``session.refresh``); None: no refresh tokens are kept.
    refresh_before: float | None = None

    @property
    def cookies(self) -> tuple[str, ...]:
        """Every cookie of the flow (none reaches the upstream)."""
        return (self.cookie, self.state_cookie, *self.kept_cookies)

    @property
    def kept_cookies(self) -> tuple[str, ...]:
        """The cookies of the provider's tokens kept beside the session."""
        return (self.id_cookie, self.refresh_cookie)

    def covers(self, path: str) -> bool:
        return self.paths is None or self.paths.matches(path)


def reply(reason: Reason, status: int, headers: list[tuple[str, str]], identity: Identity = ANONYMOUS,
          detail: str | None = None) -> Decision:
    """A decision whose reply is ``status`` with ``headers`` for the client
    (and the reason's JSON body); never cached: each is for one browser."""
    denial = Denial(status, None, tuple((name, (value,), "header") for name, value in headers), None, "json")
    return Decision(allowed=False, reason=reason, identity=identity, detail=detail, cacheable=False, denial=denial)


def refuse(login: Login, reason: Reason, detail: str) -> Decision:
    """A refused callback or logout: the reason's status and body, the
    login-state cookie cleared; never a redirect (no loop)."""
    return reply(reason, _status(reason), [("set-cookie", cookies.clear_cookie(login.state_cookie))], detail=detail)


def _status(reason: Reason) -> int:
    from authz.errors import OUTCOMES

    return OUTCOMES[reason].http_status


def is_navigation(request: Request) -> bool:
    """A browser navigation: GET or HEAD that accepts HTML."""
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")


def start(login: Login, request: Request, denied: Decision, *, may_wait: bool = False) -> Decision | None:
    """A 302 to the provider for a browser that must sign in (``denied``
    keeps its reason), with the login state in its cookie; None when the
    provider's endpoints or keys are not held (the denial stays: a redirect
    now could loop while the provider is down). Raises :class:`Waiting`
    (only when ``may_wait``) while they are being fetched."""
    endpoints = login.discovery.value()
    keys_held = login.issuer.keys.current() is not None
    if endpoints is None or not keys_held:
        pending = [login.discovery.wait_for_value() if endpoints is None else None,
                   None if keys_held else login.issuer.keys.wait_for_keys()]
        wait(_all(pending), may_wait)
        return None
    state, nonce, verifier = b64url(os.urandom(32)), b64url(os.urandom(32)), b64url(os.urandom(32))
    going = request.path if safe_return(request.path) else "/"
    redirect_uri = f"{request.scheme or 'https'}://{request.host}{login.callback_path}"
    sealed = login.cipher.seal(json.dumps({"s": state, "n": nonce, "v": verifier, "r": going, "u": redirect_uri},
                                          separators=(",", ":")).encode("utf-8"), login.state_cookie)
    challenge = b64url(hashlib.sha256(verifier.encode("ascii")).digest())
    query = urlencode({"response_type": "code", "client_id": login.client_id, "redirect_uri": redirect_uri,
                       "scope": " ".join(login.scopes), "state": state, "nonce": nonce,
                       "code_challenge": challenge, "code_challenge_method": "S256"})
    separator = "&" if "?" in endpoints.authorization else "?"
    headers = [("location", f"{endpoints.authorization}{separator}{query}"),
               ("set-cookie", cookies.set_cookie(login.state_cookie, sealed, STATE_TTL))]
    held = request.headers.get("cookie")
    if cookies.has_any(held, (login.cookie,)):
        headers.append(("set-cookie", cookies.clear_cookie(login.cookie)))  # a session that failed
        headers.extend(("set-cookie", value) for value in kept.clear_held(login.kept_cookies, held))
    return reply(denied.reason, 302, headers, detail=denied.detail)


class Waiting(Exception):
    """The decision waits on ``future`` (an outside call under way)."""

    def __init__(self, future: Any) -> None:
        super().__init__("outside call in progress")
        self.future = future


def _all(futures: list[Any]) -> Any:
    """One future done when every one of ``futures`` (None: none) is."""
    waiting = [f for f in futures if f is not None]
    return all_of(waiting) if waiting else None


def wait(future: Any, may_wait: bool) -> None:
    """Raise :class:`Waiting` for ``future`` (an outside call under way) when ``may_wait``."""
    if may_wait and future is not None:
        raise Waiting(future)


def read_state(login: Login, request: Request) -> dict[str, str] | None:
    """The login state of this browser, or None (no cookie, or one that
    does not open: tampered, or sealed with a removed key)."""
    try:
        value = cookies.read(request.headers.get("cookie"), login.state_cookie)
        if value is None:
            return None
        document = json.loads(login.cipher.open(value, login.state_cookie))
    except (cookies.CookieError, SealError, ValueError):
        return None
    if not isinstance(document, dict) or not all(isinstance(document.get(k), str) for k in "snvru"):
        return None
    return document


class UsedStates:
    """The states this process has completed a sign-in with, until they
    would have expired anyway: a second callback with one is refused. Across
    workers and processes, the provider's own rule holds: a code is redeemed
    once (RFC 6749 4.1.2), and the code is bound to this state's PKCE
    verifier (docs/security.md 90)."""

    def __init__(self, size: int = 100_000) -> None:
        self._seen: TTLCache[bytes, bool] = TTLCache(maxsize=size, ttl=STATE_TTL)
        self._lock = threading.Lock()

    def used(self, state: str) -> bool:
        with self._lock:
            return hashlib.sha256(state.encode("ascii")).digest() in self._seen

    def claim(self, state: str) -> bool:
        """True for the first claim of ``state``; False when it was used."""
        key = hashlib.sha256(state.encode("ascii")).digest()
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = True
            return True


USED = UsedStates()
