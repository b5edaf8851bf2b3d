"""A real OpenID Connect provider on 127.0.0.1: the npm package ``oidc-provider``,
run by ``testkit/oidc/provider.mjs`` under Node.js.

It issues opaque access tokens (client credentials), answers RFC 7662
introspection and RFC 7009 revocation, and signs people in through its own
login form (any login name, any password; the account's claims come from
``accounts``) for the authorization code flow with PKCE. ``scripts/setup
test`` installs its npm packages; where Node.js or the packages are missing,
:func:`unavailable` says why, for ``pytest.skip``.

The login form (oidc-provider's development interactions) is
``input[name="login"]``, ``input[name="password"]`` and
``button[type="submit"]`` ("Sign-in"); :func:`sign_in` fills it in a
:class:`testkit.browser.Browser`. Consent is granted without a page
(``loadExistingGrant`` in provider.mjs); should the consent form ever show,
its button is ``button[type="submit"]`` ("Continue") in a form holding
``input[name="prompt"][value="consent"]``, and :func:`sign_in` clicks it.
Its end-session endpoint (RP-initiated logout) asks first: a page whose
``button[name="logout"][value="yes"]`` ("Yes, sign me out") ends the
provider's session; :func:`confirm_sign_out` clicks it.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testkit.procs import Proc

if TYPE_CHECKING:
    from testkit.browser import Browser, Page

HERE = Path(__file__).resolve().parent / "oidc"
SCRIPT = HERE / "provider.mjs"


LOGIN_FIELD = 'input[name="login"]'
PASSWORD_FIELD = 'input[name="password"]'
SUBMIT_BUTTON = 'button[type="submit"]'
# The consent form's hidden field, as the provider writes it in the page.
CONSENT_MARK = 'name="prompt" value="consent"'


def sign_in(browser: Browser, login: str, password: str) -> Page:
    """Signs in on the provider's login form, where ``browser`` is now (after
    it followed an authorization request there), and consents if asked; the
    page the provider then sends the browser to (a client's redirect_uri, with
    ``code`` and ``state``)."""
    if "/interaction/" not in browser.url():
        raise AssertionError(f"not on the provider's login form: {browser.url()}")
    browser.fill(LOGIN_FIELD, login)
    browser.fill(PASSWORD_FIELD, password)
    page = browser.click(SUBMIT_BUTTON)
    if "/interaction/" in page.url and CONSENT_MARK in browser.content():
        page = browser.click(SUBMIT_BUTTON)
    return page


SIGN_OUT_BUTTON = 'button[name="logout"][value="yes"]'


def confirm_sign_out(browser: Browser) -> Page:
    """Confirms on the provider's logout page, where ``browser`` is now (after it
    followed a request to the end-session endpoint there); the page the provider
    then sends the browser to (the ``post_logout_redirect_uri``, with ``state``,
    or its own "Sign-out Success" page)."""
    if "/session/end" not in browser.url():
        raise AssertionError(f"not on the provider's logout page: {browser.url()}")
    return browser.click(SIGN_OUT_BUTTON)


def unavailable() -> str | None:
    """None when the provider can run here; else why not (a skip reason)."""
    if shutil.which("node") is None:
        return "Node.js is not on PATH (scripts/setup test installs it)"
    if not (HERE / "node_modules" / "oidc-provider" / "package.json").is_file():
        return f"the npm package oidc-provider is not installed in {HERE} (scripts/setup test installs it)"
    return None


class OidcProvider:
    """One provider process; a context manager. ``clients`` are oidc-provider
    client metadata (``client_id``, ``client_secret``, ``grant_types``,
    ``response_types``, ``redirect_uris``, ``token_endpoint_auth_method`` ...).
    ``resource`` makes access tokens audience-bound (the introspection answer
    then carries ``aud``); ``token_claims`` adds claims to every token of a
    client (they appear in introspection answers); ``ttl`` sets lifetimes in
    seconds by token kind (``ClientCredentials``, ``AccessToken``,
    ``IdToken``, ``Session`` ...)."""

    def __init__(self, *, clients: list[dict[str, Any]], accounts: dict[str, dict[str, Any]] | None = None,
                 resource: str | None = None, token_claims: dict[str, dict[str, Any]] | None = None,
                 ttl: dict[str, int] | None = None, jwks: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        self._config: dict[str, Any] = {"clients": clients, "accounts": accounts or {}}
        if resource is not None:
            self._config["resource"] = resource
        if token_claims:
            self._config["token_claims"] = token_claims
        if ttl:
            self._config["ttl"] = ttl
        if jwks:
            self._config["jwks"] = jwks
        self._config.update(extra or {})
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.proc: Proc | None = None
        self.issuer = ""
        self.discovery: dict[str, Any] = {}

    def start(self) -> OidcProvider:
        reason = unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        self._dir = tempfile.TemporaryDirectory(prefix="authz-oidc-")
        config = Path(self._dir.name) / "config.json"
        config.write_text(json.dumps(self._config))
        self.proc = Proc(["node", str(SCRIPT), str(config)], name="oidc-provider", cwd=HERE)
        port = self.proc.wait_for(r"^READY \d+$", timeout=60).split()[1]
        self.issuer = f"http://127.0.0.1:{port}"
        self.discovery = self.get_json("/.well-known/openid-configuration")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- calls a client makes -------------------------------------------------

    def get_json(self, path_or_url: str) -> Any:
        url = path_or_url if path_or_url.startswith("http") else self.issuer + path_or_url
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.load(response)

    def post_form(self, endpoint: str, form: dict[str, str], *, client_id: str,
                  client_secret: str | None = None) -> tuple[int, Any]:
        """POST ``form`` to a named endpoint of discovery (``token_endpoint``,
        ``introspection_endpoint`` ...) as ``client_id`` (HTTP Basic with a
        secret, else a public client's ``client_id`` in the form); (status, JSON)."""
        url = self.discovery[endpoint]
        headers = {"content-type": "application/x-www-form-urlencoded", "accept": "application/json"}
        body = dict(form)
        if client_secret is None:
            body["client_id"] = client_id
        else:
            pair = f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(client_secret, safe='')}"
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        request = urllib.request.Request(url, data=urllib.parse.urlencode(body).encode(), headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def client_credentials(self, client_id: str, client_secret: str, *, scope: str = "") -> str:
        """A new opaque access token for the client itself."""
        form = {"grant_type": "client_credentials"}
        if scope:
            form["scope"] = scope
        if "resource" in self._config:
            form["resource"] = self._config["resource"]
        status, answer = self.post_form("token_endpoint", form, client_id=client_id, client_secret=client_secret)
        if status != 200:
            raise AssertionError(f"client_credentials for {client_id}: HTTP {status} {answer}")
        return str(answer["access_token"])

    def introspect(self, token: str, client_id: str, client_secret: str) -> Any:
        status, answer = self.post_form("introspection_endpoint", {"token": token}, client_id=client_id,
                                        client_secret=client_secret)
        if status != 200:
            raise AssertionError(f"introspection: HTTP {status} {answer}")
        return answer

    def revoke(self, token: str, client_id: str, client_secret: str) -> None:
        """RFC 7009: the token is inactive from now on."""
        status, answer = self.post_form("revocation_endpoint", {"token": token}, client_id=client_id,
                                        client_secret=client_secret)
        if status != 200:
            raise AssertionError(f"revocation: HTTP {status} {answer}")

    def exchange_code(self, code: str, *, verifier: str, redirect_uri: str, client_id: str,
                      client_secret: str | None = None) -> Any:
        """The authorization code grant (with its PKCE verifier): the token answer
        (``id_token``, ``access_token`` ...)."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": verifier}
        status, answer = self.post_form("token_endpoint", form, client_id=client_id, client_secret=client_secret)
        if status != 200:
            raise AssertionError(f"authorization_code for {client_id}: HTTP {status} {answer}")
        return answer
