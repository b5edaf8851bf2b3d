"""Stand-ins for browser sign-in (an issuer's ``login:``) in ``authz test``.

A session cookie is sealed with the keys of ``session.keys_file``, which a
case file must not need. :func:`stand_in_logins` gives each login, for the
run, a session key made for it (a :class:`authz.login.cipher.Cipher` of one
random key) in place of the keys file, the issuer's stand-in key set (the
one its tokens verify against, :class:`authz.testing.standin.StandInKeys`)
in place of its remote one, a discovery answered in process
(:class:`StandInDiscovery`: never fetched) and a token endpoint that is never
called (:class:`authz.testing.outside.StandInCalls` with no answer: a code
exchange or a renewal fails as an outage does). The session source, the
flow and the checks are the server's own: a cookie sealed with any other key
does not open (``invalid_session``), and a session ends ``ttl`` after its
sign-in (``expired_session``).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from authz.identity.credential import Credential
from authz.identity.jwt import JwtIssuer, JwtSource
from authz.login.cipher import KEY_BYTES, Cipher
from authz.login.discovery import Discovery, Endpoints
from authz.login.flow import Login
from authz.login.session import SessionSource, seal_session
from authz.testing.outside import StandInCalls


class StandInDiscovery(Discovery):
    """A provider's endpoints held from the start, never fetched: the
    authorization endpoint is ``ISSUER/authorize``, the token endpoint
    ``ISSUER/token`` (the run never calls it)."""

    def __init__(self, discovery: Discovery) -> None:
        super().__init__(discovery.name, discovery.issuer, discovery.settings)
        base = discovery.issuer.rstrip("/")
        self.endpoints = Endpoints(f"{base}/authorize", f"{base}/token", None)

    async def download(self) -> Endpoints:
        return self.endpoints

    def value(self) -> Endpoints:
        return self.endpoints

    def wait_for_value(self) -> None:
        return None

    def start(self) -> None:
        pass


def stand_in_logins(sources: Sequence[Credential], issuers: Mapping[str, JwtIssuer],
                    ) -> tuple[list[Credential], dict[str, Login]]:
    """``sources`` with each session source's login stood in; the stand-in
    logins by issuer name. ``issuers``: the stand-in issuers, by name."""
    replaced: list[Credential] = []
    logins: dict[str, Login] = {}
    for source in sources:
        if not isinstance(source, SessionSource):
            replaced.append(source)
            continue
        login = source.login
        verifying = dataclasses.replace(login.issuer, keys=issuers[login.issuer.name].keys)
        stood = dataclasses.replace(
            login, issuer=verifying, cipher=Cipher([secrets.token_bytes(KEY_BYTES)]),
            discovery=StandInDiscovery(login.discovery), calls=StandInCalls(login.issuer.name, "login"),
            verifier=JwtSource(login.verifier.location, [verifying]))
        logins[login.issuer.name] = stood
        replaced.append(SessionSource(stood))
    return replaced, logins


def session_cookie(login: Login, claims: Mapping[str, Any], signed_in: float) -> str:
    """``NAME=VALUE`` of a session signed in at ``signed_in`` (it ends
    ``ttl`` later) holding ``claims`` over ``iss`` and ``aud`` (the
    login's client); a claim given as None is left out."""
    body: dict[str, Any] = {"iss": login.issuer.issuer, "aud": login.client_id, "iat": int(signed_in)}
    body.update(claims)
    body = {name: value for name, value in body.items() if value is not None}
    value, _ends = seal_session(login, body, signed_in)
    return f"{login.cookie}={value}"
