"""Browser sign-in (OIDC authorization code with PKCE S256): the one room of
the flow. The engine calls :func:`decide` in one place, around the rest of
the decision:

- on a login's callback or logout path, the flow's own step answers
  (:mod:`authz.login.callback`, :func:`authz.login.signout.logout`);
- otherwise the policy decides; a browser navigation on a login's paths
  denied with no credential or a failed session (:data:`START`) is sent to
  sign in instead (:func:`authz.login.flow.start`), never when the provider
  cannot be reached;
- a session near its end is renewed with its refresh token
  (:mod:`authz.login.renew`), the allow carrying the new cookies;
- an allow never passes a cookie of the flow to the upstream.

The session itself is a credential source
(:class:`authz.login.session.SessionSource`), registered like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from authz.decision import Decision
from authz.errors import Reason
from authz.login import cookies, renew
from authz.login.callback import callback
from authz.login.flow import Login, Waiting, is_navigation, start
from authz.login.signout import logout
from authz.paths import split_path
from authz.request import Request

__all__ = ["START", "Login", "Waiting", "decide"]

#: The denials a browser navigation is sent to sign in instead of: no
#: credential, or a session that failed. A request with another credential
#: (a bearer token) is decided by it as without sign-in; a failure to check
#: (``jwks_unavailable``) is never one (a redirect could loop).
START = frozenset({Reason.MISSING_CREDENTIAL, Reason.INVALID_SESSION, Reason.EXPIRED_SESSION})


def decide(logins: Sequence[Login], request: Request, now: float, *, may_wait: bool, path: Callable[[], str | None],
           rest: Callable[[Request], Decision], start_allowed: bool = True) -> Decision:
    """The decision on ``request`` with sign-in: a login's own step on its
    paths, else ``rest(request)`` (the policy), its session renewed when due
    (:mod:`authz.login.renew`), sent to sign in or stripped of the flow's
    cookies. ``path()`` is the normalized path (None: not one). Raises
    :class:`Waiting` (only when ``may_wait``) while a callback's code or a
    refresh token is exchanged."""
    raw, query = split_path(request.path)
    for login in logins:
        if raw == login.callback_path:
            return callback(login, request, query, now, may_wait=may_wait)
        if raw == login.logout_path:
            return logout(login, request, may_wait=may_wait)
    decision = rest(request)
    if decision.allowed or decision.reason is Reason.EXPIRED_SESSION:
        decision = renew.around(logins, request, decision, now, may_wait=may_wait, rest=rest)
    header = request.headers.get("cookie")
    if decision.allowed:
        names = tuple(name for login in logins for name in login.cookies)
        if not cookies.has_any(header, names):
            return decision
        kept = cookies.strip(header or "", names)
        if kept:
            headers = (*((n, v) for n, v in decision.headers if n != "cookie"), ("cookie", kept))
            return decision._replace(headers=headers)
        return decision._replace(remove=(*decision.remove, "cookie"))
    if not start_allowed or decision.reason not in START or decision.identity.authenticated \
            or not is_navigation(request):
        return decision
    normalized = path()
    if normalized is None:
        return decision
    for login in logins:
        if login.covers(normalized):
            # Not sent to sign in only while the provider is not held: a
            # later navigation may be, so this 401 is not kept for it.
            return start(login, request, decision, may_wait=may_wait) or decision._replace(cacheable=False)
    return decision
