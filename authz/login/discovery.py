"""The provider's endpoints, from its OIDC discovery document: an outside
call (:class:`authz.outside.fetcher.Fetcher`) fetched when first needed and
kept (with the issuer's key-set settings: refetched at most once per
``min_refetch_interval``, served while fetches fail until ``max_stale``).
Until it is held, no sign-in starts: a browser gets the default denial, never
a redirect that could loop while the provider is down."""

from __future__ import annotations

import threading
import weakref
from typing import NamedTuple

from authz.identity.jwks import JwksSettings
from authz.outside.fetcher import Fetcher
from authz.outside.http import FetchError, check_url, fetch_json


class Endpoints(NamedTuple):
    authorization: str
    token: str
    end_session: str | None
    #: RFC 7009's token revocation endpoint (``revocation_endpoint``): a
    #: sign-out revokes the refresh token there.
    revocation: str | None = None


class Discovery(Fetcher[Endpoints]):
    what = "login discovery"

    def __init__(self, name: str, issuer: str, settings: JwksSettings) -> None:
        super().__init__(name, settings)
        self.issuer = issuer
        self.settings: JwksSettings = settings

    async def download(self) -> Endpoints:
        session = await self._loop.session()
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await fetch_json(session, url, self.settings.max_bytes)
        return parse_discovery(document, self.issuer)


def parse_discovery(document: object, issuer: str) -> Endpoints:
    """The endpoints of a discovery document; FetchError when it names
    another issuer, or lacks or garbles an endpoint the flow needs."""
    if not isinstance(document, dict):
        raise FetchError("discovery document is not a JSON object")
    if document.get("issuer") != issuer:
        raise FetchError("discovery document names a different issuer")
    found: dict[str, str | None] = {}
    for field in ("authorization_endpoint", "token_endpoint", "end_session_endpoint", "revocation_endpoint"):
        value = document.get(field)
        if value is None and field in _OPTIONAL:
            found[field] = None
            continue
        if not isinstance(value, str):
            raise FetchError(f"discovery document has no {field}")
        problem = check_url(value)
        if problem:
            raise FetchError(f"discovery {field} {problem}")
        found[field] = value
    authorization, token = found["authorization_endpoint"], found["token_endpoint"]
    assert authorization is not None and token is not None
    return Endpoints(authorization, token, found["end_session_endpoint"], found["revocation_endpoint"])


#: The endpoints a provider may lack: without them a sign-out ends only
#: authz's session (no end-session redirect, no revocation).
_OPTIONAL = frozenset({"end_session_endpoint", "revocation_endpoint"})


_HELD: weakref.WeakValueDictionary[tuple[str, str, JwksSettings], Discovery] = weakref.WeakValueDictionary()
_HELD_LOCK = threading.Lock()


def discovery_for(name: str, issuer: str, settings: JwksSettings) -> Discovery:
    """The discovery of ``issuer`` a policy in force holds already (a reload
    keeps what it fetched), or a new one."""
    key = (name, issuer, settings)
    with _HELD_LOCK:
        found = _HELD.get(key)
        if found is None:
            found = _HELD[key] = Discovery(name, issuer, settings)
        return found
