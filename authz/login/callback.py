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

import asyncio
import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote

from authz.decision import Decision
from authz.errors import CredentialError, KeysUnavailable, Reason
from authz.login import cookies, kept
from authz.login.flow import USED, Login, Waiting, read_state, refuse, reply
from authz.login.returns import safe_return
from authz.login.session import SessionSource, SessionTooLarge, seal_session
from authz.outside.calls import Answer, CallFailed, CallWaiting
from authz.outside.http import FetchError, post_form
from authz.request import Request

#: The largest token endpoint answer read.
MAX_ANSWER = 64 * 1024


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
    headers: dict[str, str] = {}
    if login.client_secret is None:
        form["client_id"] = login.client_id
    else:
        pair = f"{quote(login.client_id, safe='')}:{quote(login.client_secret, safe='')}"
        headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    key = hashlib.sha256(f"{state['s']}\0{code}".encode()).digest()

    async def exchange(session: Any, trace: Mapping[str, str]) -> Answer[str]:
        # Another worker may have started this sign-in: what it fetched
        # first, this one fetches in the same call (one wait for the Check).
        await _held(login.discovery.value() is None, login.discovery.wait_for_value)
        await _held(login.issuer.keys.current() is None, login.issuer.keys.wait_for_keys)
        endpoints = login.discovery.value()
        if endpoints is None:
            raise FetchError("the provider's endpoints are not known (discovery failed)")
        status, answer = await post_form(session, endpoints.token, form, max_bytes=MAX_ANSWER,
                                         headers={**headers, **trace})
        if status != 200 or not isinstance(answer, dict):
            error = answer.get("error") if isinstance(answer, dict) else None
            said = f" ({error[:64]})" if isinstance(error, str) else ""
            raise _Refused(f"the token endpoint answered {status}{said}")
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise _Refused("the token endpoint's answer has no id_token")
        return Answer(id_token, ttl=0.0, size=len(id_token))

    try:
        id_token = login.calls.get(key, exchange, request.headers)
    except CallWaiting as waiting:
        if may_wait:
            raise Waiting(waiting.future) from None
        return refuse(login, Reason.LOGIN_UNAVAILABLE, "no answer from the token endpoint in time")
    except CallFailed as failed:
        reason = Reason.LOGIN_PROVIDER_ERROR if str(failed).startswith(_REFUSED) else Reason.LOGIN_UNAVAILABLE
        return refuse(login, reason, str(failed))
    try:
        identity = login.verifier.verify(id_token, now=now)
    except KeysUnavailable as exc:
        if may_wait and exc.retry is not None:
            raise Waiting(exc.retry) from None
        return refuse(login, Reason.JWKS_UNAVAILABLE, exc.detail)
    except CredentialError as exc:
        if may_wait and exc.retry is not None:  # an unknown kid: the set is being refetched
            raise Waiting(exc.retry) from None
        return refuse(login, Reason.LOGIN_ID_TOKEN_INVALID, f"ID token: {exc.detail}")
    claims = identity.claims
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode(), state["n"].encode()):
        return refuse(login, Reason.LOGIN_NONCE_MISMATCH, "the ID token's nonce is not this sign-in's")
    azp = claims.get("azp")
    if azp is not None and azp != login.client_id:
        return refuse(login, Reason.LOGIN_ID_TOKEN_INVALID, "the ID token's azp is not this client")
    try:
        value, ends = seal_session(login, claims, now)
    except SessionTooLarge as exc:
        return refuse(login, Reason.LOGIN_ID_TOKEN_INVALID, str(exc))
    if not USED.claim(state["s"]):
        return refuse(login, Reason.LOGIN_STATE_REUSED, "this state signed a browser in before")
    session = SessionSource(login).open(value, now)
    held = request.headers.get("cookie")
    return reply(Reason.SIGNED_IN, 302, [("location", state["r"]),
                                         ("set-cookie", cookies.set_cookie(login.cookie, value, int(ends - now))),
                                         *(("set-cookie", v) for v in kept.set_or_clear(login, held, login.id_cookie,
                                                                                        id_token, ends - now)),
                                         ("set-cookie", cookies.clear_cookie(login.state_cookie))],
                 identity=session.slim())


_REFUSED = "the token endpoint"


class _Refused(FetchError):
    """The token endpoint answered, and refused (a reused or foreign code)."""


async def _held(missing: bool, wait: Callable[[], Any]) -> None:
    """Wait (on the fetch loop) for an outside value being fetched, if ``missing``."""
    if missing and (future := wait()) is not None:
        await asyncio.wrap_future(future)


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
