"""The token endpoint: the code exchanged at the callback, the refresh
token at a renewal; and the revocation endpoint (RFC 7009): the refresh
token at a sign-out. Each is an outside call on the process's fetch loop
(:class:`authz.outside.calls.KeyedCalls`, single flight per key, bounded by
the login's ``timeout``), authenticated as the client (HTTP Basic with the
client secret, or ``client_id`` for a public client)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from authz.outside.calls import Answer, CallFailed, CallWaiting
from authz.outside.http import FetchError, post_form

if TYPE_CHECKING:
    from authz.login.flow import Login

#: The largest token endpoint answer read.
MAX_ANSWER = 64 * 1024

__all__ = ["CallFailed", "CallWaiting", "Tokens", "call", "refused", "rejected", "revoke"]


class Tokens(NamedTuple):
    """What the token endpoint answered that the flow keeps (None: not in the answer)."""

    id_token: str | None
    refresh_token: str | None


def call(login: Login, form: dict[str, str], key: bytes, headers: Mapping[str, str], *, keep: float = 0.0,
         need_id_token: bool = True) -> Tokens:
    """The token endpoint's answer to ``form`` (the client's credentials
    added), one call per ``key``, kept ``keep`` seconds for another Check
    with the same key; raises :class:`CallWaiting` while it is under way,
    :class:`CallFailed` when it failed (:func:`refused` tells whether the
    endpoint refused). ``headers``: the Check's (for the trace context)."""
    form, sent = _as_client(login, form)

    async def exchange(session: Any, trace: Mapping[str, str]) -> Answer[Tokens]:
        # Another worker may have started this sign-in: what it fetched
        # first, this one fetches in the same call (one wait for the Check).
        await _held(login.discovery.value() is None, login.discovery.wait_for_value)
        await _held(login.issuer.keys.current() is None, login.issuer.keys.wait_for_keys)
        endpoints = login.discovery.value()
        if endpoints is None:
            raise FetchError("the provider's endpoints are not known (discovery failed)")
        status, answer = await post_form(session, endpoints.token, form, max_bytes=MAX_ANSWER,
                                         headers={**sent, **trace})
        if status != 200 or not isinstance(answer, dict):
            error = answer.get("error") if isinstance(answer, dict) else None
            said = f" ({error[:64]})" if isinstance(error, str) else ""
            refused = f"{_REFUSED} refused the grant:" if 400 <= status < 500 else _REFUSED
            raise _Refused(f"{refused} answered {status}{said}")
        id_token, refresh_token = answer.get("id_token"), answer.get("refresh_token")
        if need_id_token and not isinstance(id_token, str):
            raise _Refused(f"{_REFUSED} refused the grant: its answer has no id_token")
        tokens = Tokens(id_token if isinstance(id_token, str) else None,
                        refresh_token if isinstance(refresh_token, str) and refresh_token else None)
        return Answer(tokens, ttl=keep, size=len(tokens.id_token or "") + len(tokens.refresh_token or ""))

    result: Tokens = login.calls.get(key, exchange, headers)
    return result


def revoke(login: Login, refresh_token: str, headers: Mapping[str, str], *, keep: float = 60.0) -> None:
    """Revoke ``refresh_token`` at the provider's revocation endpoint (RFC
    7009: a 200 means revoked, or already unknown to it), one call per
    token, its outcome kept ``keep`` seconds for the Check deciding again
    after the wait; raises :class:`CallWaiting` while it is under way,
    :class:`CallFailed` when it failed or the provider has no such endpoint."""
    form, sent = _as_client(login, {"token": refresh_token, "token_type_hint": "refresh_token"})
    key = hashlib.sha256(b"revoke\0" + refresh_token.encode("utf-8")).digest()

    async def revocation(session: Any, trace: Mapping[str, str]) -> Answer[bool]:
        endpoints = login.discovery.value()
        if endpoints is None or endpoints.revocation is None:
            raise FetchError("the provider has no revocation endpoint")
        status, answer = await post_form(session, endpoints.revocation, form, max_bytes=MAX_ANSWER,
                                         headers={**sent, **trace}, json_answer=False)
        if status != 200:
            error = answer.get("error") if isinstance(answer, dict) else None
            said = f" ({error[:64]})" if isinstance(error, str) else ""
            raise FetchError(f"the revocation endpoint answered {status}{said}")
        return Answer(True, ttl=keep, size=0)

    login.calls.get(key, revocation, headers)


def _as_client(login: Login, form: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``form`` and the request headers that authenticate it as the client."""
    sent: dict[str, str] = {}
    form = dict(form)
    if login.client_secret is None:
        form["client_id"] = login.client_id
    else:
        pair = f"{quote(login.client_id, safe='')}:{quote(login.client_secret, safe='')}"
        sent["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return form, sent


def refused(failed: CallFailed) -> bool:
    """Whether a failed call was the endpoint's refusal (a code or refresh
    token it does not honour), not a failure to reach it."""
    return str(failed).startswith(_REFUSED)


def rejected(failed: CallFailed) -> bool:
    """Whether the endpoint refused the grant itself (a 4xx answer: a code
    or refresh token spent, revoked or not its own), which asking again
    will not change; not a failure of the provider (5xx) or to reach it."""
    return str(failed).startswith(f"{_REFUSED} refused the grant:")


_REFUSED = "the token endpoint"


class _Refused(FetchError):
    """The token endpoint answered, and refused."""


async def _held(missing: bool, wait: Callable[[], Any]) -> None:
    """Wait (on the fetch loop) for an outside value being fetched, if ``missing``."""
    if missing and (future := wait()) is not None:
        await asyncio.wrap_future(future)
