"""The headless browser of the sign-in tests (testkit/browser.py) against real
servers: it signs a person in at the real OpenID Connect provider
(testkit/oidc_provider.py) through the authorization code flow with PKCE, and
keeps a ``__Host-`` cookie an HTTPS server (a certificate of testkit/pki.py)
sets, with its flags. Skipped, with the reason, where chromium, Node.js or the
npm packages are missing."""

from __future__ import annotations

import base64
import hashlib
import secrets
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest

from testkit import browser as browser_kit
from testkit import oidc_provider
from testkit.browser import Browser, BrowserError, Hop
from testkit.endpoint import Endpoint, Seen
from testkit.oidc_provider import OidcProvider, confirm_sign_out, sign_in
from testkit.pki import MeshCA

REASON = browser_kit.unavailable() or oidc_provider.unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

CLIENT_ID = "app"
CLIENT_SECRET = "app-secret"


@pytest.fixture
def callback() -> Iterator[Endpoint]:
    """The client's redirect_uri: a server on 127.0.0.1 that records what the browser brings."""
    with Endpoint(lambda seen: (200, {"signed_in": True})) as endpoint:
        yield endpoint


@pytest.fixture
def provider(callback: Endpoint) -> Iterator[OidcProvider]:
    client = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grant_types": ["authorization_code"],
              "response_types": ["code"], "redirect_uris": [callback.url + "/callback"],
              "post_logout_redirect_uris": [callback.url + "/signed-out"]}
    accounts = {"alice": {"email": "alice@example.com", "email_verified": True, "name": "Alice",
                          "groups": ["staff"]}}
    with OidcProvider(clients=[client], accounts=accounts) as op:
        yield op


@pytest.fixture
def browser() -> Iterator[Browser]:
    with Browser() as b:
        yield b


def last_callback(endpoint: Endpoint) -> Seen:
    """The last request to /callback (the browser may also ask the server for /favicon.ico)."""
    return [seen for seen in endpoint.seen if seen.path == "/callback"][-1]


def authorization_request(op: OidcProvider, redirect_uri: str) -> tuple[str, dict[str, str]]:
    """An authorization URL with state, nonce and an S256 challenge; and those values with the verifier."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    values = {"state": secrets.token_urlsafe(16), "nonce": secrets.token_urlsafe(16), "verifier": verifier}
    query = {"client_id": CLIENT_ID, "response_type": "code", "scope": "openid email profile groups",
             "redirect_uri": redirect_uri, "state": values["state"], "nonce": values["nonce"],
             "code_challenge": challenge, "code_challenge_method": "S256"}
    return op.discovery["authorization_endpoint"] + "?" + urllib.parse.urlencode(query), values


def test_the_browser_signs_in_at_the_provider_and_the_code_buys_an_id_token(
        provider: OidcProvider, callback: Endpoint, browser: Browser) -> None:
    redirect_uri = callback.url + "/callback"
    url, values = authorization_request(provider, redirect_uri)

    page = browser.goto(url)
    assert page.url.startswith(provider.issuer + "/interaction/"), page
    assert page.status == 200
    hops = browser.chain()
    assert hops[0].status in (302, 303) and hops[0].url == url
    assert hops[0].location is not None and "/interaction/" in hops[0].location
    assert hops[-1] == Hop(status=200, url=page.url, location=None)

    landed = sign_in(browser, "alice", "any password")

    assert landed.url.startswith(redirect_uri + "?"), landed
    assert landed.status == 200 and browser.status() == 200
    assert callback.count("/callback") == 1
    query = last_callback(callback).query
    assert query["state"] == [values["state"]]
    assert "code" in query
    # The provider answered the login form's POST with redirects, the last one to the redirect_uri.
    hops = browser.chain()
    assert len(hops) >= 2
    assert all(hop.status in (302, 303) and hop.location for hop in hops[:-1])
    assert hops[-2].location is not None and hops[-2].location.startswith(redirect_uri + "?")
    assert hops[-1].url == landed.url and hops[-1].status == 200
    assert '"signed_in": true' in browser.text("body")

    answer = provider.exchange_code(query["code"][0], verifier=values["verifier"], redirect_uri=redirect_uri,
                                    client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    keys = jwt.PyJWKSet.from_dict(provider.get_json(provider.discovery["jwks_uri"]))
    header = jwt.get_unverified_header(answer["id_token"])
    key = next(k for k in keys.keys if k.key_id == header["kid"])
    claims = jwt.decode(answer["id_token"], key=key, algorithms=[header["alg"]], audience=CLIENT_ID,
                        issuer=provider.issuer)
    assert claims["sub"] == "alice"
    assert claims["nonce"] == values["nonce"]
    assert claims["email"] == "alice@example.com"
    assert claims["groups"] == ["staff"]

    # The code is spent: a second exchange is refused.
    status, refused = provider.post_form(
        "token_endpoint", {"grant_type": "authorization_code", "code": query["code"][0],
                           "redirect_uri": redirect_uri, "code_verifier": values["verifier"]},
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    assert status == 400 and refused["error"] == "invalid_grant"


def test_the_provider_session_survives_so_a_second_request_needs_no_login_form(
        provider: OidcProvider, callback: Endpoint, browser: Browser) -> None:
    redirect_uri = callback.url + "/callback"
    first, _ = authorization_request(provider, redirect_uri)
    browser.goto(first)
    sign_in(browser, "alice", "pw")
    assert any(c.name.startswith("_session") for c in browser.cookies(provider.issuer + "/"))

    second, values = authorization_request(provider, redirect_uri)
    page = browser.goto(second)
    assert page.url.startswith(redirect_uri + "?"), page
    assert last_callback(callback).query["state"] == [values["state"]]
    assert browser.chain()[0].url == second


def test_signing_out_at_the_provider_ends_its_session_so_the_login_form_comes_back(
        provider: OidcProvider, callback: Endpoint, browser: Browser) -> None:
    redirect_uri = callback.url + "/callback"
    url, values = authorization_request(provider, redirect_uri)
    browser.goto(url)
    sign_in(browser, "alice", "pw")
    answer = provider.exchange_code(last_callback(callback).query["code"][0], verifier=values["verifier"],
                                    redirect_uri=redirect_uri, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)

    end = provider.discovery["end_session_endpoint"] + "?" + urllib.parse.urlencode(
        {"id_token_hint": answer["id_token"], "post_logout_redirect_uri": callback.url + "/signed-out",
         "state": "bye"})
    assert "/session/end" in browser.goto(end).url
    page = confirm_sign_out(browser)
    assert page.url == callback.url + "/signed-out?state=bye", page
    assert [s.query for s in callback.seen if s.path == "/signed-out"] == [{"state": ["bye"]}]

    again, _ = authorization_request(provider, redirect_uri)
    assert browser.goto(again).url.startswith(provider.issuer + "/interaction/")


def test_a_code_without_its_verifier_is_refused(provider: OidcProvider, callback: Endpoint,
                                                browser: Browser) -> None:
    redirect_uri = callback.url + "/callback"
    url, _ = authorization_request(provider, redirect_uri)
    browser.goto(url)
    sign_in(browser, "alice", "pw")
    code = last_callback(callback).query["code"][0]
    status, answer = provider.post_form(
        "token_endpoint", {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                           "code_verifier": secrets.token_urlsafe(48)},
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    assert status == 400 and answer["error"] == "invalid_grant"


class _CookieServer:
    """HTTPS on 127.0.0.1 (plain HTTP without ``cert``): ``/set`` sets a ``__Host-``
    cookie, ``/hop`` redirects to ``/set``, ``/echo`` answers with the Cookie header it received."""

    def __init__(self, cert: Path | None, key: Path | None, expires_in: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                headers: list[tuple[str, str]] = []
                status, body = 200, b""
                if self.path == "/set":
                    body = b"<html><body><p id=msg>cookie set</p></body></html>"
                    headers.append(("set-cookie", f"__Host-session=s3cr3t; Path=/; Secure; HttpOnly; SameSite=Lax; "
                                                  f"Max-Age={expires_in}"))
                    headers.append(("set-cookie", "plain=1; Path=/"))
                elif self.path == "/hop":
                    status = 302
                    headers.append(("location", "/set"))
                elif self.path == "/echo":
                    body = ("<html><body><p id=cookie>" + (self.headers.get("cookie") or "") + "</p></body></html>"
                            ).encode()
                else:
                    status = 404
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> _CookieServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("how", ["trusted key", "errors ignored", "a mapped name"])
def test_a_host_cookie_from_an_https_page_is_kept_with_its_flags_and_sent_back(tmp_path: Path, how: str) -> None:
    ca = MeshCA(tmp_path)
    cert, key = ca.workload("spiffe://test/app", "app")
    choices: dict[str, dict[str, Any]] = {
        "trusted key": {"trust": [cert]},
        "errors ignored": {"ignore_https_errors": True},
        # The certificate names 127.0.0.1 and localhost, not app.test: a trusted key covers that too.
        "a mapped name": {"trust": [cert], "hosts": {"app.test": "127.0.0.1"}},
    }
    with _CookieServer(cert, key, expires_in=600) as server, Browser(**choices[how]) as browser:
        origin = server.url.replace("127.0.0.1", "app.test") if how == "a mapped name" else server.url
        domain = urllib.parse.urlsplit(origin).hostname
        page = browser.goto(origin + "/hop")
        assert page.url == origin + "/set" and page.status == 200
        assert browser.chain() == [Hop(302, origin + "/hop", "/set"), Hop(200, origin + "/set", None)]
        assert browser.text("#msg") == "cookie set"

        host = browser.cookie("__Host-session")
        assert host is not None
        assert (host.value, host.domain, host.path) == ("s3cr3t", domain, "/")
        assert host.secure and host.http_only and host.same_site == "Lax"
        # Max-Age 600, set now (the server sets it per request; not a timing assertion: a wide window).
        assert time.time() < host.expires <= time.time() + 601
        plain = browser.cookie("plain")
        assert plain is not None and not plain.secure and not plain.http_only and plain.expires == -1

        browser.goto(origin + "/echo")
        sent = browser.text("#cookie")
        assert "__Host-session=s3cr3t" in sent and "plain=1" in sent
        assert browser.reload().status == 200
        assert "__Host-session=s3cr3t" in browser.text("#cookie")

        browser.clear_cookies()
        assert browser.cookies() == []


def test_a_secure_cookie_over_plain_http_is_kept_on_loopback_only() -> None:
    """Chromium counts http://127.0.0.1 and http://localhost as secure contexts (a ``__Host-``
    cookie set there is kept), not a name mapped to 127.0.0.1."""
    with _CookieServer(None, None, expires_in=600) as server, \
            Browser(hosts={"app.test": "127.0.0.1"}) as browser:
        port = urllib.parse.urlsplit(server.url).port
        for host, kept in (("127.0.0.1", True), ("localhost", True), ("app.test", False)):
            browser.clear_cookies()
            assert browser.goto(f"http://{host}:{port}/set").status == 200
            assert (browser.cookie("__Host-session") is not None) is kept, host
            assert browser.cookie("plain") is not None


def test_an_untrusted_certificate_fails_the_navigation_as_an_error(tmp_path: Path) -> None:
    ca = MeshCA(tmp_path)
    cert, key = ca.workload("spiffe://test/app", "app")
    with _CookieServer(cert, key, expires_in=600) as server, Browser() as browser:
        with pytest.raises(BrowserError, match="ERR_CERT"):
            browser.goto(server.url + "/set")
        assert browser.cookies() == []


def test_errors_and_timeouts_come_back_as_errors_and_the_browser_goes_on(browser: Browser) -> None:
    with pytest.raises(BrowserError, match="unknown command"):
        browser.call("no_such_command")
    browser.goto("data:text/html,<p id=here>here</p>")
    with pytest.raises(BrowserError, match="Timeout"):
        browser.text("#not-there", timeout=0.5)
    with pytest.raises(BrowserError, match="Timeout"):
        browser.wait_for_url("never-this", timeout=0.5)
    # A name that is not mapped does not resolve: nothing leaves the machine.
    with pytest.raises(BrowserError, match="ERR_NAME_NOT_RESOLVED"):
        browser.goto("http://example.com/")
    # The same browser answers the next command.
    assert browser.goto("data:text/html,<p id=again>again</p>").status is None
    assert browser.text("#again") == "again"
