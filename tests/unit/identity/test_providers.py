"""Tokens shaped like Okta, Entra ID (v1 and v2), Keycloak and Auth0 issue
them, verified through OIDC discovery against a real HTTP server.

For each provider the test generates a key pair, serves the provider-shaped
discovery document and key set (``tests/fixtures/providers/``) from
127.0.0.1 with the provider's origins replaced by the server's, writes a
policy whose issuer is that URL and which has no ``jwks_uri`` (so discovery
is used), and decides with :meth:`Engine.decide_blocking`.

The server is a small one here rather than ``testkit.idp.FakeIdP``:
FakeIdP serves discovery only at the root, and these issuers have paths
(``/oauth2/default``, ``/{tenant}/v2.0``, ``/realms/shop``) under which
discovery is looked up.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import string
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from authz.config import KeyRegistry, load_policy
from authz.engine import Engine
from authz.identity.jwks import FetchLoop
from testkit import tokens
from testkit.paths import PROVIDER_FIXTURES
from testkit.requests import request
from testkit.tokens import b64, raw_sign

TENANT = "4a2c3f6e-1b5d-4e8f-9a0b-7c6d5e4f3a21"
OTHER_TENANT = "0f1e2d3c-4b5a-4978-8a9b-acbdcedf0f1e"


class ProviderServer:
    """JSON documents by path on 127.0.0.1, with a count of requests per path."""

    def __init__(self) -> None:
        self.documents: dict[str, Any] = {}
        self.hits: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                server.hits[path] += 1
                document = server.documents.get(path)
                body = b"not found" if document is None else json.dumps(document).encode()
                self.send_response(404 if document is None else 200)
                self.send_header("content-type", "text/plain" if document is None else "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> ProviderServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass(frozen=True)
class Provider:
    name: str
    origins: tuple[str, ...]  # real origins in the fixtures, served locally
    kid: str
    audiences: tuple[str, ...]
    roles_claim: str
    scopes_claim: str
    subject: str
    roles: frozenset[str]
    scopes: tuple[str, ...]
    role: str  # the role in `roles` that grants GET /api/orders
    when: str  # a CEL condition on provider-specific claims
    cel_mismatch: dict[str, Any]  # claim changes under which `when` is false or fails
    negatives: tuple[tuple[str, dict[str, Any], str], ...] = field(default=())  # (name, claim changes, reason)


PROVIDERS = [
    Provider(
        name="okta",
        origins=("https://dev-123456.okta.com",),
        kid="Vl4xbO3qkXh9s0vQ6yUeJ2iD8nR1mZcA5tGwKpLfEoY",
        audiences=("api://default",),
        roles_claim="groups",
        scopes_claim="scp",
        subject="alice@example.com",
        roles=frozenset({"Everyone", "orders-reader"}),
        scopes=("openid", "profile", "email", "orders:read"),
        role="orders-reader",
        when='identity.claims.cid == "0oa8f5j3ecb5w3dF35d7" && identity.claims.uid == "00u1a2b3c4d5e6f7g8h9"'
             ' && "orders:read" in identity.scopes',
        cel_mismatch={"cid": "0oaSomeOtherClient00"},
        negatives=(("wrong-audience", {"aud": "api://other"}, "invalid_token"),),
    ),
    Provider(
        name="entra-v1",
        origins=("https://sts.windows.net", "https://login.microsoftonline.com"),
        kid="kWbkaa6qs8wsTnBwiiNYOhHbnAw",
        audiences=("api://orders-api",),
        roles_claim="roles",
        scopes_claim="scp",
        subject="l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA",
        roles=frozenset({"Orders.Read"}),
        scopes=("Orders.Read", "User.Read"),
        role="Orders.Read",
        when=f'identity.claims.tid == "{TENANT}" && identity.claims.ver == "1.0"'
             ' && identity.claims.appid == "6e2b9f0c-52a1-4b7e-9d3e-0a8c1f4e2b7d"',
        cel_mismatch={"appid": "11111111-2222-4333-8444-555555555555"},
        negatives=(
            # Entra signs every tenant's tokens with the same keys: only the
            # exact, tenant-specific issuer keeps other tenants out.
            ("other-tenant", {"iss": f"https://sts.windows.net/{OTHER_TENANT}/", "tid": OTHER_TENANT},
             "unknown_issuer"),
            ("v2-issuer", {"iss": f"https://login.microsoftonline.com/{TENANT}/v2.0"}, "unknown_issuer"),
            ("client-id-audience", {"aud": "0c9d8e7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f"}, "invalid_token"),
        ),
    ),
    Provider(
        name="entra-v2",
        origins=("https://login.microsoftonline.com",),
        kid="L1KfKFI_jnXbwWc22xZxw1sUHH0",
        audiences=("0c9d8e7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f",),
        roles_claim="roles",
        scopes_claim="scp",
        subject="X7fE2pQ9rT4uV1wY6zA3bC8dE5fG0hJ2kL4mN6oP8qR",
        roles=frozenset({"Orders.Read", "Orders.Write"}),
        scopes=("access_as_user",),
        role="Orders.Read",
        when=f'identity.claims.azp == "6e2b9f0c-52a1-4b7e-9d3e-0a8c1f4e2b7d" && identity.claims.tid == "{TENANT}"'
             ' && identity.claims.ver == "2.0"',
        cel_mismatch={"azp": "11111111-2222-4333-8444-555555555555"},
        negatives=(
            ("app-id-uri-audience", {"aud": "api://orders-api"}, "invalid_token"),
            ("other-tenant", {"iss": f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0", "tid": OTHER_TENANT},
             "unknown_issuer"),
        ),
    ),
    Provider(
        name="keycloak",
        origins=("https://sso.example.com",),
        kid="r4Xq9Zb2cN7vH1kT5mW8yJ3dF6gS0aLpE2uQwIoBnMc",
        audiences=("orders-api",),
        roles_claim="realm_access.roles",
        scopes_claim="scope",
        subject="f1c2d3e4-a5b6-4c7d-8e9f-0a1b2c3d4e5f",
        roles=frozenset({"offline_access", "uma_authorization", "default-roles-shop", "orders-reader"}),
        scopes=("openid", "email", "profile", "orders:read"),
        role="orders-reader",
        when='"orders-auditor" in identity.claims.resource_access["orders-api"].roles'
             ' && identity.claims.azp == "shop-frontend" && identity.claims.typ == "Bearer"',
        # Without the client's entry the expression fails to evaluate: not matched.
        cel_mismatch={"resource_access": {"account": {"roles": ["view-profile"]}}},
        negatives=(
            ("account-audience-only", {"aud": "account"}, "invalid_token"),
            ("other-realm", {"iss": "https://sso.example.com/realms/master"}, "unknown_issuer"),
        ),
    ),
    Provider(
        name="auth0",
        origins=("https://example.us.auth0.com",),
        kid="QzE3NjQ1RkY4RTk5MkYzNDNFRUQ5QjQ4OTc3RjM0Q0Y",
        audiences=("https://api.example.com/orders",),
        roles_claim="https://example.com/roles",
        scopes_claim="scope",
        subject="auth0|65f1c0ffee0123456789abcd",
        roles=frozenset({"orders-reader"}),
        scopes=("openid", "profile", "email", "read:orders"),
        role="orders-reader",
        when='"read:reports" in identity.claims.permissions'
             ' && identity.claims["https://example.com/email"] == "alice@example.com"',
        cel_mismatch={"permissions": ["read:orders"]},
        negatives=(
            # Auth0's issuer ends with '/': without it, it is another issuer.
            ("issuer-without-slash", {"iss": "https://example.us.auth0.com"}, "unknown_issuer"),
            ("userinfo-audience-only", {"aud": "https://example.us.auth0.com/userinfo"}, "invalid_token"),
        ),
    ),
]


def _certificate_der(key: Any, name: str) -> bytes:
    """A self-signed certificate for the key (the x5c of providers that publish one)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(1).not_valid_before(start)
                   .not_valid_after(start + datetime.timedelta(days=3650)).sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.DER)


class ProviderCase:
    """One provider's documents and keys, rewritten onto a local server."""

    def __init__(self, provider: Provider, server: ProviderServer) -> None:
        self.provider = provider
        self.server = server
        self.key = tokens.rsa_key(f"provider-{provider.name}")
        directory = PROVIDER_FIXTURES / provider.name
        numbers = self.key.public_key().public_numbers()
        certificate = _certificate_der(self.key, provider.name)
        enc = tokens.rsa_key(f"provider-{provider.name}-enc").public_key().public_numbers()
        values = {
            "KID": provider.kid, "N": b64(numbers.n.to_bytes(256, "big")), "E": b64(numbers.e.to_bytes(3, "big")),
            "X5C": base64.b64encode(certificate).decode(), "X5T": b64(hashlib.sha1(certificate).digest()),
            "X5T_S256": b64(hashlib.sha256(certificate).digest()),
            "ENC_N": b64(enc.n.to_bytes(256, "big")), "ENC_KID": provider.kid[::-1],
        }
        self.discovery = json.loads(self.rewrite((directory / "openid-configuration.json").read_text()))
        jwks = json.loads(self.rewrite(string.Template((directory / "jwks.json").read_text()).substitute(values)))
        token = json.loads(string.Template((directory / "access-token.json").read_text()).substitute(values))
        self.header: dict[str, Any] = token["header"]
        self.claims: dict[str, Any] = token["claims"]
        self.issuer: str = self.discovery["issuer"]
        server.documents[self.discovery_path] = self.discovery
        server.documents[self.jwks_path] = jwks

    def rewrite(self, text: str) -> str:
        for origin in self.provider.origins:
            text = text.replace(origin, self.server.origin)
        return text

    @property
    def discovery_path(self) -> str:
        return urlsplit(self.issuer).path.rstrip("/") + "/.well-known/openid-configuration"

    @property
    def jwks_path(self) -> str:
        return urlsplit(str(self.discovery["jwks_uri"])).path

    def token(self, **changes: Any) -> str:
        """A signed access token with the provider's claims, times set around now."""
        now = int(time.time())
        claims = dict(self.claims)
        for name, offset in (("iat", -60), ("nbf", -60), ("auth_time", -120), ("exp", 3600)):
            if name in claims:
                claims[name] = now + offset
        claims.update(changes)
        claims = json.loads(self.rewrite(json.dumps(claims)))
        return tokens.token(claims, key=self.key, alg="RS256", header=self.header)

    def write_policy(self, tmp_path: Path) -> Path:
        provider = self.provider
        path = tmp_path / "policy.yaml"
        path.write_text(yaml.safe_dump({
            "version": 1,
            "issuers": [{
                "name": provider.name, "issuer": self.issuer, "audiences": list(provider.audiences),
                "algorithms": ["RS256"], "roles_claim": provider.roles_claim, "scopes_claim": provider.scopes_claim,
            }],
            "roles": {provider.role: [{"methods": ["GET"], "paths": ["/api/orders", "/api/orders/*"]}]},
            "rules": [{"name": "provider-claims", "effect": "allow", "methods": ["GET"], "paths": ["/api/reports"],
                       "when": provider.when}],
            "response": {"headers": {"x-user-id": "identity.subject"}},
        }, sort_keys=False))
        return path


@pytest.fixture
def fetch_loop() -> Iterator[FetchLoop]:
    loop = FetchLoop()
    yield loop
    loop.close()


@pytest.fixture(params=PROVIDERS, ids=lambda p: p.name)
def case(request: pytest.FixtureRequest) -> Iterator[ProviderCase]:
    with ProviderServer() as server:
        yield ProviderCase(request.param, server)


@pytest.fixture
def engine(case: ProviderCase, tmp_path: Path, fetch_loop: FetchLoop) -> Engine:
    policy = load_policy(str(case.write_policy(tmp_path)), registry=KeyRegistry(fetch_loop))
    assert policy.issuers[0].issuer == case.issuer
    return Engine(policy)


def _decide(engine: Engine, token: str, path: str = "/api/orders") -> Any:
    return engine.decide_blocking(request(path=path, bearer=token), timeout=5)


def test_discovery_and_allow(case: ProviderCase, engine: Engine) -> None:
    provider = case.provider
    assert case.issuer.startswith(case.server.origin)
    assert case.issuer.endswith("/") is (provider.name in ("auth0", "entra-v1"))
    decision = _decide(engine, case.token())
    assert decision.allowed is True, decision.detail
    assert decision.reason == "allowed"
    assert decision.rule == provider.role
    identity = decision.identity
    assert identity.kind == "jwt"
    assert identity.subject == provider.subject
    assert identity.issuer == case.issuer
    assert identity.roles == provider.roles
    assert identity.scopes == provider.scopes
    assert dict(decision.headers)["x-user-id"] == provider.subject
    # Discovery ran: the document at the issuer, then the jwks_uri it names.
    assert case.server.hits[case.discovery_path] == 1
    assert case.server.hits[case.jwks_path] == 1


def test_provider_specific_claims_in_cel(case: ProviderCase, engine: Engine) -> None:
    decision = _decide(engine, case.token(), "/api/reports")
    assert decision.allowed is True, decision.detail
    assert decision.rule == "provider-claims"
    # Control: the same token without the claim the rule reads is not allowed there...
    other = case.token(**case.provider.cel_mismatch)
    denied = _decide(engine, other, "/api/reports")
    assert (denied.allowed, denied.status, denied.reason) == (False, 403, "no_permission")
    # ...though it is still a valid token for the role's paths.
    assert _decide(engine, other).allowed is True


def test_negative(case: ProviderCase, engine: Engine) -> None:
    assert _decide(engine, case.token()).allowed is True  # keys loaded; the control
    assert case.provider.negatives
    for name, changes, reason in case.provider.negatives:
        decision = _decide(engine, case.token(**changes))
        assert (decision.allowed, decision.status, decision.reason) == (False, 401, reason), (name, decision.detail)
        assert decision.challenge is not None and 'error="invalid_token"' in decision.challenge


def test_a_token_signed_by_another_key_is_refused(case: ProviderCase, engine: Engine) -> None:
    genuine = case.token()
    assert _decide(engine, genuine).allowed is True
    header, payload, _ = genuine.split(".")
    forged_signature = raw_sign(f"{header}.{payload}".encode(), tokens.rsa_key("provider-attacker"), "RS256")
    decision = _decide(engine, f"{header}.{payload}.{b64(forged_signature)}")
    assert (decision.allowed, decision.status, decision.reason) == (False, 401, "invalid_token")


def test_fixtures_are_provider_shaped() -> None:
    """The fixtures keep the providers' real URL layouts and claim types."""
    def load(name: str, file: str) -> Any:
        return json.loads((PROVIDER_FIXTURES / name / file).read_text())

    assert load("okta", "openid-configuration.json")["issuer"] == "https://dev-123456.okta.com/oauth2/default"
    assert isinstance(load("okta", "access-token.json")["claims"]["scp"], list)
    v1 = load("entra-v1", "access-token.json")["claims"]
    assert v1["iss"] == f"https://sts.windows.net/{TENANT}/" and v1["ver"] == "1.0" and isinstance(v1["scp"], str)
    assert v1["aud"].startswith("api://")
    v2 = load("entra-v2", "access-token.json")["claims"]
    assert v2["iss"] == f"https://login.microsoftonline.com/{TENANT}/v2.0" and v2["ver"] == "2.0" and "azp" in v2
    keycloak = load("keycloak", "access-token.json")["claims"]
    assert keycloak["iss"] == "https://sso.example.com/realms/shop" and keycloak["typ"] == "Bearer"
    assert "roles" in keycloak["realm_access"] and "resource_access" in keycloak
    auth0 = load("auth0", "access-token.json")["claims"]
    assert auth0["iss"] == "https://example.us.auth0.com/" and isinstance(auth0["https://example.com/roles"], list)
    assert isinstance(auth0["permissions"], list) and isinstance(auth0["scope"], str)
    for provider in PROVIDERS:
        discovery = load(provider.name, "openid-configuration.json")
        assert any(discovery["issuer"].startswith(origin) for origin in provider.origins)
        assert any(discovery["jwks_uri"].startswith(origin) for origin in provider.origins)
