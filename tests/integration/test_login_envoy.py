"""Browser sign-in through a real Envoy on both doors against the real
OpenID Connect provider (npm ``oidc-provider``), driven by an HTTP client
that keeps cookies as a browser does: sent to sign in, signed in at the
provider's form, called back, the app reached with the user's headers and
without the session cookie, signed out. The same replies through each door:
``Location`` and both ``Set-Cookie`` headers reach the client."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from authz.config import load_policy
from authz.tools.envoy_config import EnvoyOptions
from authz.tools.policy_headers import PolicyHeaders
from testkit.oidc_provider import OidcProvider, sign_in_by_http, unavailable
from testkit.procs import Authz, Echo, Envoy, free_port

pytestmark = [pytest.mark.integration, pytest.mark.skipif(unavailable() is not None, reason=unavailable() or "")]

HOST = "shop.test"
CALLBACK = f"http://{HOST}/oauth2/callback"
SESSION = "__Host-authz_session"
STATE = "__Host-authz_session_login"
ID = "__Host-authz_session_id"
CLIENT = {"client_id": "shop-web", "client_secret": "shop-web-secret", "grant_types": ["authorization_code"],
          "response_types": ["code"], "redirect_uris": [CALLBACK], "post_logout_redirect_uris": []}


def policy(issuer: str, *, session: tuple[str, ...] = ("ttl: 1h",)) -> str:
    """The login tests' policy: sign-in under /app/** at ``issuer``; ``session``
    are the session's settings beside its keys file (each test's own)."""
    settings = "".join(f"        {line}\n" for line in (*session, "keys_file: session.keys"))
    return f"""\
version: 1
issuers:
  - name: shop-idp
    issuer: {issuer}
    audiences: [orders-api]
    algorithms: [RS256]
    roles_claim: groups
    login:
      client_id: shop-web
      client_secret_file: shop-web.secret
      scopes: [openid, email, groups]
      paths: ["/app/**"]
      session:
{settings}roles:
  staff:
    - {{methods: [GET, HEAD], paths: ["/app/**"]}}
response:
  headers:
    x-user: identity.subject
    x-email: identity.claims.email
"""


def fetch(url: str) -> tuple[int, str]:
    """A GET at the provider: its status and page."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


class Browser:
    """Cookies kept as a browser keeps them for one site; redirects not followed."""

    def __init__(self, base: str) -> None:
        self.base = urlsplit(base)
        self.jar: dict[str, str] = {}

    def go(self, target: str, *, method: str = "GET", headers: dict[str, str] | None = None,
           accept: str = "text/html,application/xhtml+xml") -> tuple[int, dict[str, list[str]], bytes]:
        sent = {"host": HOST, "accept": accept, **(headers or {})}
        if self.jar:
            sent["cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        connection = http.client.HTTPConnection(self.base.hostname or "127.0.0.1", self.base.port, timeout=30)
        try:
            connection.request(method, target, headers=sent)
            response = connection.getresponse()
            got: dict[str, list[str]] = {}
            for name, value in response.getheaders():
                got.setdefault(name.lower(), []).append(value)
            body = response.read()
        finally:
            connection.close()
        for value in got.get("set-cookie", []):
            pair, _, attributes = value.partition(";")
            name, _, content = pair.partition("=")
            if "Max-Age=0" in attributes:
                self.jar.pop(name, None)
            else:
                self.jar[name] = content
        return response.status, got, body


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Envoy]]:
    tmp = tmp_path_factory.mktemp("login")
    accounts = {"alice": {"email": "alice@shop.test", "groups": ["staff"]}}
    with OidcProvider(clients=[CLIENT], accounts=accounts, extra={"claims": {
            "openid": ["sub"], "email": ["email"], "groups": ["groups"]}}) as provider:
        (tmp / "policy.yaml").write_text(policy(provider.issuer))
        (tmp / "shop-web.secret").write_text("shop-web-secret\n")
        (tmp / "session.keys").write_text(base64.urlsafe_b64encode(os.urandom(32)).decode() + "\n")
        headers = PolicyHeaders.of(load_policy(str(tmp / "policy.yaml")))
        assert {"location", "set-cookie"} <= set(headers.denial) and "cookie" in headers.upstream
        with doors(tmp, workers=2) as via:
            yield {**via, "issuer": provider.issuer}  # type: ignore[dict-item]


@contextlib.contextmanager
def doors(tmp: Path, *, workers: int) -> Iterator[dict[str, Envoy]]:
    """authz on ``tmp/policy.yaml`` (both doors) behind an edge Envoy per
    door, configured as ``authz envoy-config`` configures it for the policy,
    before an upstream that echoes what it got: {"grpc": ..., "http": ...}."""
    headers = PolicyHeaders.of(load_policy(str(tmp / "policy.yaml")))
    door = f"127.0.0.1:{free_port()}"
    with Echo() as echo, Authz(tmp / "policy.yaml", workers=workers, extra=[
            "--http-authz-address", door, "--http-authz-prefix", "/authz"]) as authz:
        grpc = EnvoyOptions(shape="edge", authz=[authz.grpc_address], upstream=echo.address,
                            upstream_headers=headers.upstream, owned_headers=headers.owned)
        http_ = EnvoyOptions(shape="edge", authz=[door], upstream=echo.address, protocol="http",
                             path_prefix="/authz", upstream_headers=headers.upstream, owned_headers=headers.owned,
                             denial_headers=headers.denial, client_headers=headers.client)
        (tmp / "grpc").mkdir()
        (tmp / "http").mkdir()
        with Envoy(tmp / "grpc", grpc) as via_grpc, Envoy(tmp / "http", http_) as via_http:
            yield {"grpc": via_grpc, "http": via_http}


@pytest.mark.parametrize("door", ["grpc", "http"])
def test_sign_in_reach_the_app_and_sign_out(stack: dict[str, Envoy], door: str) -> None:
    issuer = str(stack["issuer"])
    browser = Browser(stack[door].url)
    status, headers, _ = browser.go("/app/orders?page=2")
    assert status == 302, headers
    location = headers["location"][0]
    assert location.startswith(issuer + "/auth?")
    assert STATE in browser.jar and SESSION not in browser.jar
    # An API call is not sent anywhere: its 401 stays.
    api = Browser(stack[door].url).go("/app/orders", accept="application/json")
    assert api[0] == 401 and "location" not in api[1]

    back = sign_in_by_http(location, login="alice", until=CALLBACK)
    callback = urlsplit(back)
    status, headers, body = browser.go(f"{callback.path}?{callback.query}")
    assert status == 302, body
    assert headers["location"] == ["/app/orders?page=2"]
    assert len(headers["set-cookie"]) == 3  # the session and the ID token set, the login state cleared
    assert SESSION in browser.jar and ID in browser.jar and STATE not in browser.jar
    session_cookie = next(v for v in headers["set-cookie"] if v.startswith(SESSION + "="))
    assert "; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=3600" in session_cookie

    browser.jar["theme"] = "dark"
    status, headers, body = browser.go("/app/orders?page=2")
    assert status == 200, body
    seen = json.loads(body)["headers"]
    assert seen["x-user"] == "alice" and seen["x-email"] == "alice@shop.test"
    assert seen["cookie"] == "theme=dark"  # the session and ID token cookies never reach the upstream
    del browser.jar["theme"]
    # A reload, no new sign-in; the client's own copies of the headers authz sets never reach the upstream.
    status, _, body = browser.go("/app/orders", headers={"x-user": "root", "x-email": "root@evil.test"})
    assert status == 200
    seen = json.loads(body)["headers"]
    assert "cookie" not in seen  # the session was the only cookie: none upstream
    assert seen["x-user"] == "alice" and seen["x-email"] == "alice@shop.test"

    replay = Browser(stack[door].url)
    status, headers, body = replay.go(f"{callback.path}?{callback.query}")
    assert status == 403 and json.loads(body)["reason"] == "login_state_invalid"  # another browser's state

    refused = browser.go("/oauth2/logout")
    assert refused[0] == 403 and json.loads(refused[2])["reason"] == "logout_refused"
    status, headers, _ = browser.go("/oauth2/logout", method="POST", headers={"origin": f"http://{HOST}"})
    assert status == 302
    end_session = headers["location"][0]
    assert end_session.startswith(issuer + "/session/end?client_id=shop-web")
    assert SESSION not in browser.jar and ID not in browser.jar
    hint = parse_qs(urlsplit(end_session).query)["id_token_hint"][0]
    # The provider accepts the hint as an ID token it issued to this client (its sign-out form), ...
    status, page = fetch(end_session)
    assert status == 200 and 'name="logout"' in page, page[:300]
    # ... and refuses one it did not issue.
    header, payload, signature = hint.split(".")
    status, page = fetch(end_session.replace(hint, f"{header}.{payload}.{signature[:-6]}AAAAAA"))
    assert status == 400 and "id_token_hint" in page, page[:300]
    status, headers, _ = browser.go("/app/orders")
    assert status == 302 and headers["location"][0].startswith(issuer + "/auth?")
    assert parse_qs(urlsplit(headers["location"][0]).query)["code_challenge_method"] == ["S256"]
