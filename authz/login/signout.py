"""Signing out (``logout_path``): the session's cookies cleared, the
refresh token revoked at the provider (RFC 7009), and the browser sent to
the provider's end-session endpoint."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from urllib.parse import urlencode

from authz.decision import Decision
from authz.errors import Reason
from authz.login import cookies, kept, token
from authz.login.flow import Login, Waiting, refuse, reply, wait
from authz.request import Request

log = logging.getLogger("authz.login")


def logout(login: Login, request: Request, *, may_wait: bool = False) -> Decision:
    """Clear the session: only a POST from a page of this origin (an
    ``Origin`` of this scheme and host, or ``Sec-Fetch-Site: same-origin``),
    so another site cannot sign the user out; the browser's refresh token
    revoked when the provider has a revocation endpoint (:func:`_revoke`);
    then a 302 to the provider's end-session endpoint when it has one, else
    to ``/``. Raises :class:`Waiting` (only when ``may_wait``) while
    discovery is fetched or the revocation is under way."""
    headers = request.headers
    origin = headers.get("origin")
    here = f"{request.scheme or 'https'}://{request.host}"
    same = hmac.compare_digest(origin, here) if origin is not None else headers.get("sec-fetch-site") == "same-origin"
    if request.method != "POST" or not same:
        return refuse(login, Reason.LOGOUT_REFUSED, "a logout must be a POST from this origin")
    endpoints = login.discovery.value()
    if endpoints is None:  # this worker has not fetched it yet
        wait(login.discovery.wait_for_value(), may_wait)
    elif endpoints.revocation is not None:
        _revoke(login, headers, may_wait)
    target = "/"
    if endpoints is not None and endpoints.end_session is not None:
        params = {"client_id": login.client_id}
        hint = kept.read(login.cipher, headers.get("cookie"), login.id_cookie)
        if hint is not None:  # the provider knows whose session ends (and may skip its confirmation)
            params["id_token_hint"] = hint
        separator = "&" if "?" in endpoints.end_session else "?"
        target = f"{endpoints.end_session}{separator}{urlencode(params)}"
    cleared = (login.cookie, login.state_cookie, *login.kept_cookies)
    return reply(Reason.SIGNED_OUT, 302, [("location", target),
                                          *(("set-cookie", cookies.clear_cookie(name)) for name in cleared)])


def _revoke(login: Login, headers: Mapping[str, str], may_wait: bool) -> None:
    """Revoke the browser's refresh token at the provider (RFC 7009), when
    it holds one; raises :class:`Waiting` (only when ``may_wait``) while the
    call is under way. A revocation that fails or does not answer in time is
    logged, and the sign-out goes on: its cookies are cleared either way."""
    refresh = kept.read(login.cipher, headers.get("cookie"), login.refresh_cookie)
    if refresh is None:
        return
    try:
        token.revoke(login, refresh, headers)
    except token.CallWaiting as waiting:
        if may_wait:
            raise Waiting(waiting.future) from None
        log.warning("%s: sign-out: refresh token not revoked: no answer from the revocation endpoint in time",
                    login.issuer.name)
    except token.CallFailed as failed:
        log.warning("%s: sign-out: refresh token not revoked: %s", login.issuer.name, failed)
