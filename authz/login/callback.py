"""The callback step: the provider sends the browser back with a code; the
code is exchanged at the token endpoint (an outside call on the process's
fetch loop, one per code, :class:`authz.outside.calls.KeyedCalls`), the ID
token verified with the issuer's key set and verifier, and the browser sent
on with its session cookie.

What is refused, each with its reason and never with a redirect (a
refusal that redirected could loop): no login-state cookie or a ``state``
not its own (``login_state_invalid``), a state this process completed before
(``login_state_reused``), a provider error or a code it refuses
(``login_provider_error``), no answer in time (``login_unavailable``), an ID
token of another issuer, audience or key, expired, or with an ``azp`` not
the client (``login_id_token_invalid``), another nonce
(``login_nonce_mismatch``), a return URL that is not this origin's
(``login_return_invalid``).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import parse_qsl

from authz.decision import Decision
from authz.errors import CredentialError, KeysUnavailable, Reason
from authz.login import cookies, kept, token
from authz.login.flow import USED, Login, Waiting, read_state, refuse, reply
from authz.login.returns import safe_return
from authz.login.session import SessionSource, SessionTooLarge, seal_session
from authz.request import Request


def callback(login: Login, request: Request, query: str, now: float, *, may_wait: bool) -> Decision:
    """The reply to a callback; raises :class:`Waiting` (only when
    ``may_wait``) while the code is being exchanged or the keys fetched."""
    params = _params(query)
    state = read_state(login, request)
    if state is None:
        return refuse(login, Reason.LOGIN_STATE_INVALID, "no login state for this browser (none, or it does not open)")
    if not hmac.compare_digest(params.get("state", "").encode(), state["s"].encode()):
        return refuse(login, Reason.LOGIN_STATE_INVALID, "the callback's state is not this browser's")
    if USED.used(state["s"]):
        return refuse(login, Reason.LOGIN_STATE_REUSED, "this state signed a browser in before")
    if "error" in params:
        return refuse(login, Reason.LOGIN_PROVIDER_ERROR, f"the provider answered {params['error'][:64]!r}")
    code = params.get("code")
    if not code:
        return refuse(login, Reason.LOGIN_PROVIDER_ERROR, "the callback carries no code")
    if not safe_return(state["r"]):
        return refuse(login, Reason.LOGIN_RETURN_INVALID, "the return URL is not a path of this origin")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": state["u"],
            "code_verifier": state["v"]}
    key = hashlib.sha256(f"{state['s']}\0{code}".encode()).digest()
    try:
        tokens = token.call(login, form, key, request.headers)
    except token.CallWaiting as waiting:
        if may_wait:
            raise Waiting(waiting.future) from None
        return refuse(login, Reason.LOGIN_UNAVAILABLE, "no answer from the token endpoint in time")
    except token.CallFailed as failed:
        reason = Reason.LOGIN_PROVIDER_ERROR if token.refused(failed) else Reason.LOGIN_UNAVAILABLE
        return refuse(login, reason, str(failed))
    id_token = tokens.id_token or ""
    verified = verify_id_token(login, id_token, now, may_wait=may_wait)
    if not isinstance(verified, dict):
        return refuse(login, *verified)
    claims = verified
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode(), state["n"].encode()):
        return refuse(login, Reason.LOGIN_NONCE_MISMATCH, "the ID token's nonce is not this sign-in's")
    try:
        value, ends = seal_session(login, claims, now)
    except SessionTooLarge as exc:
        return refuse(login, Reason.LOGIN_ID_TOKEN_INVALID, str(exc))
    if not USED.claim(state["s"]):
        return refuse(login, Reason.LOGIN_STATE_REUSED, "this state signed a browser in before")
    session = SessionSource(login).open(value, now)
    held, ttl = request.headers.get("cookie"), ends - now
    refresh = tokens.refresh_token if login.refresh_before is not None else None
    endpoints = login.discovery.value()
    hint = None if endpoints is not None and endpoints.end_session is None else id_token  # no end-session: no hint
    written = [cookies.set_cookie(login.cookie, value, int(ttl)),
               *kept.set_or_clear(login.cipher, held, login.id_cookie, hint, ttl),
               *kept.set_or_clear(login.cipher, held, login.refresh_cookie, refresh, ttl),
               cookies.clear_cookie(login.state_cookie)]
    return reply(Reason.SIGNED_IN, 302, [("location", state["r"]), *(("set-cookie", v) for v in written)],
                 identity=session.slim())


def verify_id_token(login: Login, id_token: str, now: float, *, may_wait: bool) -> dict[str, Any] | tuple[Reason, str]:
    """The claims of ``id_token`` verified as the login's (the issuer's key
    set and verifier, the client as audience, ``azp`` when present), or the
    reason and detail of its refusal; raises :class:`Waiting` (only when
    ``may_wait``) while the key set is fetched."""
    try:
        identity = login.verifier.verify(id_token, now=now)
    except KeysUnavailable as exc:
        if may_wait and exc.retry is not None:
            raise Waiting(exc.retry) from None
        return Reason.JWKS_UNAVAILABLE, exc.detail
    except CredentialError as exc:
        if may_wait and exc.retry is not None:  # an unknown kid: the set is being refetched
            raise Waiting(exc.retry) from None
        return Reason.LOGIN_ID_TOKEN_INVALID, f"ID token: {exc.detail}"
    claims = dict(identity.claims)
    azp = claims.get("azp")
    if azp is not None and azp != login.client_id:
        return Reason.LOGIN_ID_TOKEN_INVALID, "the ID token's azp is not this client"
    return claims


def _params(query: str) -> dict[str, str]:
    """The query's parameters; a name given twice counts as not given."""
    out: dict[str, str] = {}
    twice: set[str] = set()
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in out:
            twice.add(name)
        out[name] = value
    for name in twice:
        del out[name]
    return out
