"""Browser sign-in end to end: a real headless chromium (testkit/browser.py)
through a real Envoy with a TLS listener (a certificate of testkit/pki.py)
on each door, against the real OpenID Connect provider (npm
``oidc-provider``). A person signs in at the provider's form, reaches the
app with their headers upstream (and without the session cookie), reloads
without signing in again, signs out (a same-origin POST, then the provider's
end-session page), and is sent back to sign in. Skipped, with the reason,
where chromium, Node.js or the npm packages are missing."""

from __future__ import annotations

import base64
import html
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from authz.config import load_policy
from authz.tools.envoy_config import EnvoyOptions
from authz.tools.policy_headers import PolicyHeaders
from testkit import browser as browser_kit
from testkit import oidc_provider
from testkit.browser import Browser
from testkit.oidc_provider import OidcProvider, confirm_sign_out, sign_in
from testkit.pki import MeshCA
from testkit.procs import Authz, Envoy, free_port
from tests.integration.test_login_envoy import policy

REASON = browser_kit.unavailable() or oidc_provider.unavailable()
pytestmark = [pytest.mark.integration, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

SESSION = "__Host-authz_session"


class App:
    """The upstream: an HTML page showing the request's headers (as JSON in
    ``#headers``) with a sign-out form that POSTs to the logout path."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                seen = json.dumps({k.lower(): v for k, v in self.headers.items()})
                body = (f'<html><body><pre id="headers">{html.escape(seen)}</pre>'
                        '<form method="post" action="/oauth2/logout"><button id="sign-out" type="submit">'
                        "Sign out</button></form></body></html>").encode()
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> App:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path]:
    return MeshCA(tmp_path).workload("spiffe://test/shop", "shop")


@pytest.mark.parametrize("door", ["grpc", "http"])
def test_a_person_signs_in_reaches_the_app_reloads_signs_out_and_is_sent_back_to_sign_in(
        tmp_path: Path, tls: tuple[Path, Path], door: str) -> None:
    cert, key = tls
    port = free_port()
    origin = f"https://shop.test:{port}"
    client = {"client_id": "shop-web", "client_secret": "shop-web-secret", "grant_types": ["authorization_code"],
              "response_types": ["code"], "redirect_uris": [origin + "/oauth2/callback"]}
    accounts = {"alice": {"email": "alice@shop.test", "groups": ["staff"]}}
    claims = {"openid": ["sub"], "email": ["email"], "groups": ["groups"]}
    with OidcProvider(clients=[client], accounts=accounts, extra={"claims": claims}) as provider:
        (tmp_path / "policy.yaml").write_text(policy(provider.issuer, session=()))
        (tmp_path / "shop-web.secret").write_text("shop-web-secret\n")
        (tmp_path / "session.keys").write_text(base64.urlsafe_b64encode(os.urandom(32)).decode() + "\n")
        headers = PolicyHeaders.of(load_policy(str(tmp_path / "policy.yaml")))
        http_door = f"127.0.0.1:{free_port()}"
        with App() as app, Authz(tmp_path / "policy.yaml", workers=1, extra=[
                "--http-authz-address", http_door, "--http-authz-prefix", "/authz"]) as authz:
            via = {"authz": [authz.grpc_address]} if door == "grpc" else \
                {"authz": [http_door], "protocol": "http", "path_prefix": "/authz", "denial_headers": headers.denial}
            options = EnvoyOptions(shape="edge", upstream=app.address, upstream_headers=headers.upstream,
                                   owned_headers=headers.owned, downstream_tls_cert=str(cert),
                                   downstream_tls_key=str(key), **via)
            with Envoy(tmp_path, options, listen_port=port), \
                    Browser(trust=[cert], hosts={"shop.test": "127.0.0.1"}) as browser:
                page = browser.goto(origin + "/app/orders?page=2")
                assert page.url.startswith(provider.issuer + "/interaction/"), page
                first = browser.chain()[0]
                assert first.status == 302 and first.location is not None
                assert first.location.startswith(provider.issuer + "/auth?")

                landed = sign_in(browser, "alice", "any password")
                assert landed.url == origin + "/app/orders?page=2" and landed.status == 200, landed
                seen = json.loads(browser.text("#headers"))
                assert seen["x-user"] == "alice" and seen["x-email"] == "alice@shop.test"
                assert SESSION not in seen.get("cookie", "")  # the session cookie never reaches the app
                session = browser.cookie(SESSION)
                assert session is not None and session.secure and session.http_only
                assert session.same_site == "Lax" and session.path == "/"
                assert browser.cookie(SESSION + "_login") is None  # the login state is spent
                kept = browser.cookie(SESSION + "_id")  # the ID token, for the sign-out's hint
                assert kept is not None and kept.secure and kept.http_only and kept.same_site == "Lax"

                reloaded = browser.reload()
                assert reloaded.status == 200 and reloaded.url == origin + "/app/orders?page=2"
                assert [hop.status for hop in browser.chain()] == [200]  # no new sign-in

                out = browser.click("#sign-out")
                assert out.url.startswith(provider.issuer + "/session/end"), out
                assert "id_token_hint=" in out.url and out.status == 200, out  # the provider took the hint
                assert browser.cookie(SESSION) is None and browser.cookie(SESSION + "_id") is None
                confirm_sign_out(browser)

                again = browser.goto(origin + "/app/orders")
                assert again.url.startswith(provider.issuer + "/interaction/"), again  # the login form again
                assert browser.chain()[0].status == 302
