"""A provider stand-in on 127.0.0.1 (testkit/endpoint.py) whose token
endpoint answers the ID token each test crafts, and the engine over a policy
with ``login:``."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from authz.config import load_policy
from authz.decision import Decision
from authz.engine import Engine
from authz.reply import render
from testkit.endpoint import Endpoint, Seen
from testkit.requests import request
from testkit.tokens import public_jwk, rsa_key, token

KID = "login-key"
CLIENT = "shop-web"
SECRET = "web-secret"
HOST = "shop.example"


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


class Provider:
    """Discovery, a key set and a token endpoint; ``id_token(form)`` makes
    the token endpoint's ID token (None: answer 400 invalid_grant)."""

    def __init__(self) -> None:
        self.key = rsa_key("login")
        self.discovery_status = 200
        self.jwks_status = 200
        self.token_forms: list[dict[str, str]] = []
        #: The ID tokens the token endpoint answered, in order.
        self.issued: list[str] = []
        #: Refresh tokens: issued with every answer when ``refreshing``; the
        #: ones it honours (a refresh grant spends one and issues the next:
        #: rotation); the claims of a renewal's ID token (None: no ID token).
        self.refreshing = False
        self.refresh_tokens: list[str] = []
        self.honoured: set[str] = set()
        self.refresh_claims: dict[str, Any] | None = None
        #: Whether discovery names an end-session endpoint.
        self.end_session = True
        #: Whether discovery names a revocation endpoint (RFC 7009); what it
        #: was sent; a status it answers instead of revoking (a provider down).
        self.revocation = True
        self.revoked: list[Seen] = []
        self.revocation_status: int | None = None
        #: A status the token endpoint answers instead (a provider down).
        self.token_status: int | None = None
        self.claims: dict[str, Any] | None = None
        self.sign_key: Any = self.key
        self.endpoint = Endpoint(self.answer)

    @property
    def issuer(self) -> str:
        return self.endpoint.url

    def answer(self, seen: Seen) -> tuple[int, Any]:
        url = self.endpoint.url
        if seen.path == "/.well-known/openid-configuration":
            return self.discovery_status, {
                "issuer": url, "jwks_uri": url + "/jwks", "authorization_endpoint": url + "/authorize",
                "token_endpoint": url + "/token",
                **({"end_session_endpoint": url + "/session/end"} if self.end_session else {}),
                **({"revocation_endpoint": url + "/revoke"} if self.revocation else {})}
        if seen.path == "/revoke":
            self.revoked.append(seen)
            if self.revocation_status is not None:
                return self.revocation_status, {"error": "temporarily_unavailable"}
            self.honoured.discard(seen.form.get("token", ""))
            return 200, b""  # RFC 7009: a 200, no body
        if seen.path == "/jwks":
            return self.jwks_status, {"keys": [public_jwk(self.key, kid=KID, alg="RS256")]}
        if seen.path == "/token":
            self.token_forms.append(seen.form)
            if self.token_status is not None:
                return self.token_status, {"error": "temporarily_unavailable"}
            if seen.form.get("grant_type") == "refresh_token":
                return self.renew(seen.form.get("refresh_token", ""))
            if self.claims is None:
                return 400, {"error": "invalid_grant"}
            self.issued.append(token(self.claims, key=self.sign_key, kid=KID))
            return 200, {"access_token": "opaque", "token_type": "Bearer", "id_token": self.issued[-1],
                         **self.next_refresh()}
        return 404, {}

    def next_refresh(self) -> dict[str, str]:
        if not self.refreshing:
            return {}
        self.refresh_tokens.append(f"rt-{len(self.refresh_tokens) + 1}-{new_key()}")
        self.honoured.add(self.refresh_tokens[-1])
        return {"refresh_token": self.refresh_tokens[-1]}

    def renew(self, refresh_token: str) -> tuple[int, Any]:
        if refresh_token not in self.honoured:
            return 400, {"error": "invalid_grant"}
        self.honoured.discard(refresh_token)
        answer: dict[str, Any] = {"access_token": "opaque", "token_type": "Bearer", **self.next_refresh()}
        if self.refresh_claims is not None:
            self.issued.append(token(self.refresh_claims, key=self.sign_key, kid=KID))
            answer["id_token"] = self.issued[-1]
        return 200, answer

    def id_claims(self, nonce: str | None, *, now: float | None = None, **overrides: Any) -> dict[str, Any]:
        now = int(time.time() if now is None else now)
        claims: dict[str, Any] = {"iss": self.issuer, "aud": CLIENT, "sub": "alice", "iat": now, "exp": now + 300,
                                  "nonce": nonce, "groups": ["staff"], "email": "alice@shop.example"}
        if nonce is None:  # a renewal's ID token carries none
            del claims["nonce"]
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims


def policy_text(issuer: str, *, login_extra: str = "", keys_file: str = "session.keys") -> str:
    return f"""\
version: 1
issuers:
  - name: corp
    issuer: {issuer}
    audiences: [orders-api]
    algorithms: [RS256]
    roles_claim: groups
    login:
      client_id: {CLIENT}
      client_secret_file: web.secret
      paths: ["/app/**"]
      session:
        ttl: 1h
        keys_file: {keys_file}
{login_extra}
roles:
  staff:
    - {{methods: [GET, HEAD], paths: ["/app/**"]}}
response:
  headers:
    x-user: identity.subject
"""


class Flow:
    """The engine over the policy in ``tmp``; a browser's cookie jar."""

    def __init__(self, tmp: Path, provider: Provider, keys: list[str] | None = None, text: str | None = None) -> None:
        self.tmp = tmp
        self.provider = provider
        self.keys = keys or [new_key()]
        self.write(self.keys, text)
        self.jar: dict[str, str] = {}

    def write(self, keys: list[str], text: str | None = None) -> None:
        (self.tmp / "session.keys").write_text("\n".join(keys) + "\n")
        (self.tmp / "web.secret").write_text(SECRET + "\n")
        (self.tmp / "policy.yaml").write_text(text or policy_text(self.provider.issuer))
        self.engine = Engine(load_policy(str(self.tmp / "policy.yaml")))

    def decide(self, method: str, path: str, headers: dict[str, str] | None = None, *,
               cookies: dict[str, str] | None = None) -> Decision:
        sent = dict(headers or {})
        jar = self.jar if cookies is None else cookies
        if jar:
            sent["cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        return self.engine.decide_blocking(request(method, path, host=HOST, headers=sent), timeout=10)

    def navigate(self, path: str, **kwargs: Any) -> Decision:
        decision = self.decide("GET", path, {"accept": "text/html,application/xhtml+xml"}, **kwargs)
        self.keep(decision)
        return decision

    def keep(self, decision: Decision) -> None:
        """What a browser does with the reply's Set-Cookie headers."""
        for name, value in client_headers(decision):
            if name == "set-cookie":
                pair, _, attributes = value.partition(";")
                cookie, _, content = pair.partition("=")
                if "Max-Age=0" in attributes:
                    self.jar.pop(cookie, None)
                else:
                    self.jar[cookie] = content

    def sign_in(self, path: str = "/app/home") -> Decision:
        """Start, then the provider's answer for the nonce it was sent, then the callback."""
        started = self.navigate(path)
        params = location_params(started)
        self.provider.claims = self.provider.id_claims(params["nonce"])
        return self.navigate(f"/oauth2/callback?code=the-code-{params['state'][:8]}&state={params['state']}")


def client_headers(decision: Decision) -> list[tuple[str, str]]:
    return list(render(decision, None).client)


def header(decision: Decision, name: str) -> str | None:
    return next((v for n, v in client_headers(decision) if n == name), None)


def location_params(decision: Decision) -> dict[str, str]:
    location = header(decision, "location")
    assert location is not None, decision
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@pytest.fixture
def provider() -> Iterator[Provider]:
    stand_in = Provider()
    with stand_in.endpoint:
        yield stand_in


@pytest.fixture
def flow(tmp_path: Path, provider: Provider) -> Flow:
    return Flow(tmp_path, provider)
