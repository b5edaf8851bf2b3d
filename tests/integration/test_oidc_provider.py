"""The real OpenID Connect provider the tests start (testkit/oidc_provider.py):
what introspection and sign-in tests rely on it to do, and ``post_form``
against a real token and introspection endpoint."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from authz.outside.http import post_form
from testkit.oidc_provider import OidcProvider, unavailable

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=unavailable() or "")

CLIENTS = [
    {"client_id": "authz", "client_secret": "authz-secret", "grant_types": ["client_credentials"],
     "response_types": [], "redirect_uris": []},
    {"client_id": "partner", "client_secret": "partner-secret", "grant_types": ["client_credentials"],
     "response_types": [], "redirect_uris": []},
]


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    with OidcProvider(clients=CLIENTS, resource="https://orders.example",
                      token_claims={"partner": {"roles": ["orders-reader"]}}) as op:
        yield op


def introspect_with_post_form(op: OidcProvider, token: str, secret: str) -> tuple[int, Any]:
    basic = base64.b64encode(f"authz:{secret}".encode()).decode()

    async def run() -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session:
            return await post_form(session, op.discovery["introspection_endpoint"], {"token": token},
                                   max_bytes=65536, headers={"authorization": "Basic " + basic})
    return asyncio.run(run())


def test_an_opaque_token_is_active_with_its_audience_and_claims_until_revoked(provider: OidcProvider) -> None:
    token = provider.client_credentials("partner", "partner-secret")
    assert token.count(".") == 0  # opaque, not a JWT
    status, answer = introspect_with_post_form(provider, token, "authz-secret")
    assert status == 200
    assert answer["active"] is True
    assert answer["iss"] == provider.issuer
    assert answer["aud"] == "https://orders.example"
    assert answer["client_id"] == "partner"
    assert answer["roles"] == ["orders-reader"]
    assert answer["token_type"] == "Bearer"
    provider.revoke(token, "partner", "partner-secret")
    assert introspect_with_post_form(provider, token, "authz-secret") == (200, {"active": False})


def test_an_unknown_token_is_inactive_and_a_wrong_secret_is_refused(provider: OidcProvider) -> None:
    assert introspect_with_post_form(provider, "not-a-token", "authz-secret") == (200, {"active": False})
    status, answer = introspect_with_post_form(provider, "not-a-token", "wrong")
    assert status == 401
    assert answer["error"] == "invalid_client"


def test_discovery_names_what_sign_in_and_introspection_use(provider: OidcProvider) -> None:
    for endpoint in ("authorization_endpoint", "token_endpoint", "introspection_endpoint", "revocation_endpoint",
                     "end_session_endpoint", "jwks_uri"):
        assert provider.discovery[endpoint].startswith(provider.issuer + "/")
    assert "S256" in provider.discovery["code_challenge_methods_supported"]
