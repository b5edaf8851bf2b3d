"""Sessions renewed with the real provider's refresh tokens (npm
``oidc-provider``, issuing a refresh token with every code and rotating it
at each use) through a real Envoy on both doors: a session near its end is
renewed without a redirect and its new cookies reach the client, the
upstream never sees a token, the decision cache never replays a renewal's
Set-Cookie, and a revoked refresh token leaves the session to end and the
browser to sign in as without one.

A session "near its end" is the browser's own session cookie sealed again
by the test (which holds the keys) with an end two minutes from now: authz
cannot tell it from one that has aged."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from authz.config import load_policy
from authz.login.cipher import Cipher, unb64url
from authz.tools.policy_headers import PolicyHeaders
from testkit.oidc_provider import OidcProvider, sign_in_by_http, unavailable
from testkit.procs import Envoy
from tests.integration.test_login_envoy import CALLBACK, HOST, Browser, doors, policy

pytestmark = [pytest.mark.integration, pytest.mark.skipif(unavailable() is not None, reason=unavailable() or "")]

SESSION = "__Host-authz_session"
ID = "__Host-authz_session_id"
REFRESH = "__Host-authz_session_refresh"
CLIENT = {"client_id": "shop-web", "client_secret": "shop-web-secret",
          "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
          "redirect_uris": [CALLBACK]}


class Stack:
    def __init__(self, provider: OidcProvider, cipher: Cipher, doors: dict[str, Envoy]) -> None:
        self.provider = provider
        self.cipher = cipher
        self.doors = doors

    def signed_in(self, door: str) -> Browser:
        browser = Browser(self.doors[door].url)
        status, headers, _ = browser.go("/app/orders")
        assert status == 302, headers
        back = urlsplit(sign_in_by_http(headers["location"][0], login="alice", until=CALLBACK))
        status, headers, body = browser.go(f"{back.path}?{back.query}")
        assert status == 302, body
        assert {SESSION, ID, REFRESH} <= set(browser.jar), headers  # the refresh token kept
        return browser

    def near_end(self, browser: Browser, seconds: float) -> None:
        """The browser's session sealed again to end ``seconds`` from now."""
        document = json.loads(self.cipher.open(browser.jar[SESSION], SESSION))
        document["e"] = time.time() + seconds
        browser.jar[SESSION] = self.cipher.seal(json.dumps(document).encode(), SESSION)

    def opened(self, value: str, name: str) -> str:
        return self.cipher.open(value, name).decode()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("refresh")
    accounts = {"alice": {"email": "alice@shop.test", "groups": ["staff"]}}
    with OidcProvider(clients=[CLIENT], accounts=accounts, extra={
            "claims": {"openid": ["sub"], "email": ["email"], "groups": ["groups"]},
            "refresh_clients": ["shop-web"]}) as provider:
        (tmp / "policy.yaml").write_text(policy(provider.issuer, session=("ttl: 1h", "refresh: true")))
        (tmp / "shop-web.secret").write_text("shop-web-secret\n")
        key = base64.urlsafe_b64encode(os.urandom(32)).decode()
        (tmp / "session.keys").write_text(key + "\n")
        headers = PolicyHeaders.of(load_policy(str(tmp / "policy.yaml")))
        assert "set-cookie" in headers.client and "set-cookie" not in headers.upstream
        # One worker: a renewal's answer is shared by the requests of one worker (docs/login.md, Limits).
        with doors(tmp, workers=1) as via:
            yield Stack(provider, Cipher([unb64url(key.rstrip("="))]), via)


@pytest.mark.parametrize("door", ["grpc", "http"])
def test_a_session_near_its_end_is_renewed_without_a_redirect(stack: Stack, door: str) -> None:
    browser = stack.signed_in(door)
    first_refresh = stack.opened(browser.jar[REFRESH], REFRESH)
    stack.near_end(browser, 120)
    old = dict(browser.jar)

    status, headers, body = browser.go("/app/orders", accept="application/json")  # an API call renews too
    assert status == 200, body
    written = {v.partition("=")[0]: v for v in headers.get("set-cookie", [])}
    assert set(written) == {SESSION, ID, REFRESH}, headers
    assert all("; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=3600" in v for v in written.values())
    seen = json.loads(body)["headers"]
    assert seen["x-user"] == "alice"
    assert "cookie" not in seen and "set-cookie" not in seen  # no token, old or new, upstream
    for value in (*old.values(), *browser.jar.values(), first_refresh):
        assert value not in body.decode()
    renewed = json.loads(stack.opened(browser.jar[SESSION], SESSION))
    assert renewed["e"] > time.time() + 3000 and renewed["c"]["sub"] == "alice"
    new_refresh = stack.opened(browser.jar[REFRESH], REFRESH)
    assert new_refresh != first_refresh  # rotated by the provider: the new one replaces the old
    payload = stack.opened(browser.jar[ID], ID).split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sub"] == "alice" and claims["aud"] == "shop-web"  # the ID token kept for the hint

    # The renewed session is not due: no cookie.
    status, headers, _ = browser.go("/app/orders")
    assert status == 200 and "set-cookie" not in headers

    # Another caller with the old cookies (a parallel request): a renewal of its own, never the first
    # reply replayed from the decision cache, and the same rotated token (the provider asked once).
    other = Browser(stack.doors[door].url)
    other.jar = dict(old)
    status, headers, _ = other.go("/app/orders")
    assert status == 200 and len(headers.get("set-cookie", [])) == 3
    assert other.jar[SESSION] != browser.jar[SESSION]
    assert stack.opened(other.jar[REFRESH], REFRESH) == new_refresh


@pytest.mark.parametrize("door", ["grpc", "http"])
def test_a_revoked_refresh_token_lets_the_session_end_then_the_browser_signs_in(stack: Stack, door: str) -> None:
    browser = stack.signed_in(door)
    stack.provider.revoke(stack.opened(browser.jar[REFRESH], REFRESH), "shop-web", "shop-web-secret")
    stack.near_end(browser, 120)
    session = browser.jar[SESSION]
    status, headers, _ = browser.go("/app/orders")
    assert status == 200  # the session's own time is left; not stretched
    written = {v.partition("=")[0]: v for v in headers.get("set-cookie", [])}
    assert set(written) == {REFRESH} and "Max-Age=0" in written[REFRESH]  # the refused token cleared
    assert browser.jar[SESSION] == session and REFRESH not in browser.jar

    stack.near_end(browser, -1)  # ended
    status, headers, _ = browser.go("/app/orders")
    assert status == 302 and headers["location"][0].startswith(stack.provider.issuer + "/auth?")


@pytest.mark.parametrize("door", ["grpc", "http"])
def test_signing_out_revokes_the_refresh_token_at_the_provider(stack: Stack, door: str) -> None:
    browser = stack.signed_in(door)
    refresh = stack.opened(browser.jar[REFRESH], REFRESH)
    assert stack.provider.introspect(refresh, "shop-web", "shop-web-secret")["active"] is True

    status, headers, _ = browser.go("/oauth2/logout", method="POST", headers={"origin": f"http://{HOST}"})
    assert status == 302 and headers["location"][0].startswith(stack.provider.issuer + "/session/end?")
    assert not {SESSION, ID, REFRESH} & set(browser.jar)  # every cookie cleared
    # Revoked before the redirect reached the browser: the provider no longer honours it.
    assert stack.provider.introspect(refresh, "shop-web", "shop-web-secret")["active"] is False

    # A sign-out whose refresh token the provider no longer knows still signs out (RFC 7009: a 200 all the same).
    again = stack.signed_in(door)
    stack.provider.revoke(stack.opened(again.jar[REFRESH], REFRESH), "shop-web", "shop-web-secret")
    status, _, _ = again.go("/oauth2/logout", method="POST", headers={"origin": f"http://{HOST}"})
    assert status == 302 and not {SESSION, ID, REFRESH} & set(again.jar)
