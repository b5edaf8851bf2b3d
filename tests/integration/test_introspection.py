"""Opaque tokens through real Envoy, on both doors, checked by introspection
at a REAL provider (node-oidc-provider, testkit/oidc_provider.py; skipped
cleanly without Node), and the outage cases against a misbehaving endpoint
(testkit/endpoint.py)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authz.config import load_policy
from authz.engine import Engine
from authz.errors import Reason
from authz.tools.envoy_config import EnvoyOptions
from testkit.endpoint import Endpoint
from testkit.oidc_provider import OidcProvider, unavailable
from testkit.paths import ACCEPTANCE
from testkit.procs import Authz, Echo, Envoy, free_port, http_get
from testkit.requests import request
from testkit.tokens import claims, public_jwk, rsa_key, token

pytestmark = pytest.mark.integration

RESOURCE = "https://orders.example"
SIGNER = rsa_key("introspection-client")
CLIENTS: list[dict[str, Any]] = [
    {"client_id": "authz", "client_secret": "authz-secret", "grant_types": ["client_credentials"],
     "response_types": [], "redirect_uris": []},
    {"client_id": "authz-pkj", "token_endpoint_auth_method": "private_key_jwt",
     "token_endpoint_auth_signing_alg": "RS256", "jwks": {"keys": [public_jwk(SIGNER, kid="pkj-1")]},
     "grant_types": ["client_credentials"], "response_types": [], "redirect_uris": []},
    {"client_id": "partner", "client_secret": "partner-secret", "grant_types": ["client_credentials"],
     "response_types": [], "redirect_uris": []},
    {"client_id": "stranger", "client_secret": "stranger-secret", "grant_types": ["client_credentials"],
     "response_types": [], "redirect_uris": []},
]


def write_policy(tmp: Path, issuer: str, endpoint: str, *, timeout: str = "1s") -> Path:
    shutil.copy(ACCEPTANCE / "corp.jwks.json", tmp / "corp.jwks.json")
    (tmp / "introspection.secret").write_text("authz-secret\n")
    policy = tmp / "policy.yaml"
    policy.write_text(f"""\
version: 1
issuers:
  - name: corp
    issuer: https://idp.example.com
    audiences: [orders-api]
    jwks_file: corp.jwks.json
    algorithms: [RS256]
    roles_claim: groups
  - name: partners
    issuer: {issuer}
    audiences: [{RESOURCE}]
    roles_claim: roles
    introspection:
      endpoint: {endpoint}
      client_id: authz
      client_secret_file: introspection.secret
      timeout: {timeout}
roles:
  orders-reader:
    - {{methods: [GET], paths: ["/api/orders", "/api/orders/*"]}}
response:
  headers:
    x-client: 'identity.kind == "introspected" ? identity.claims.client_id : identity.subject'
  remove: [authorization]
""")
    return policy


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    with OidcProvider(clients=CLIENTS, resource=RESOURCE,
                      token_claims={"partner": {"roles": ["orders-reader"]}}) as op:
        yield op


@pytest.fixture(scope="module")
def doors(provider: OidcProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("introspection")
    policy = write_policy(tmp, provider.issuer, provider.discovery["introspection_endpoint"])
    http_address = f"127.0.0.1:{free_port()}"
    extra = ["--http-authz-address", http_address, "--http-authz-prefix", "/authz"]
    with Echo() as echo, Authz(policy, workers=1, extra=extra) as authz, \
            Envoy(tmp, EnvoyOptions(shape="edge", authz=[authz.grpc_address], upstream=echo.address)) as grpc_envoy, \
            Envoy(tmp / "..", EnvoyOptions(shape="edge", authz=[http_address], upstream=echo.address,
                                           protocol="http", path_prefix="/authz",
                                           upstream_headers=("x-client",))) as http_envoy:
        yield {"grpc": grpc_envoy, "http": http_envoy, "authz": authz}


DOORS = ["grpc", "http"]


def get(envoy: Envoy, bearer: str) -> tuple[int, dict[str, str], bytes]:
    return http_get(envoy.url + "/api/orders/7", {"authorization": f"Bearer {bearer}"})


@pytest.mark.parametrize("door", DOORS)
def test_an_active_opaque_token_is_allowed_with_its_claims_upstream(provider: OidcProvider, doors: dict[str, Any],
                                                                    door: str) -> None:
    opaque = provider.client_credentials("partner", "partner-secret")
    status, _headers, body = get(doors[door], opaque)
    assert status == 200, body
    seen = json.loads(body)["headers"]
    assert seen["x-client"] == "partner" and "authorization" not in seen


@pytest.mark.parametrize("door", DOORS)
def test_a_revoked_token_is_401_inactive_token(provider: OidcProvider, doors: dict[str, Any], door: str) -> None:
    opaque = provider.client_credentials("partner", "partner-secret")
    provider.revoke(opaque, "partner", "partner-secret")
    status, headers, body = get(doors[door], opaque)
    assert status == 401
    assert json.loads(body)["reason"] == "inactive_token"
    assert 'error_description="inactive_token"' in headers["www-authenticate"]


@pytest.mark.parametrize("door", DOORS)
def test_a_token_without_the_role_is_403_and_garbage_is_401(provider: OidcProvider, doors: dict[str, Any],
                                                            door: str) -> None:
    other = provider.client_credentials("stranger", "stranger-secret")
    assert get(doors[door], other)[0] == 403
    status, _headers, body = get(doors[door], "never-issued-" + door)
    assert status == 401 and json.loads(body)["reason"] == "inactive_token"


@pytest.mark.parametrize("door", DOORS)
def test_sec_80_jwts_beside_introspection_and_a_strangers_jwt_never_sent(provider: OidcProvider,
                                                                          doors: dict[str, Any], door: str) -> None:
    envoy = doors[door]
    status, _headers, body = get(envoy, token(claims(sub="alice")))
    assert status == 200 and json.loads(body)["headers"]["x-client"] == "alice"
    assert get(envoy, provider.client_credentials("partner", "partner-secret"))[0] == 200
    before = outside_calls(doors["authz"])
    assert before >= 1  # /metrics counts the introspection calls, by issuer name
    status, _headers, body = get(envoy, token(claims(iss="https://evil.example.com")))
    assert status == 401 and json.loads(body)["reason"] == "unknown_issuer"
    assert outside_calls(doors["authz"]) == before


def outside_calls(authz: Authz) -> float:
    _status, _headers, body = authz.get("/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
               if line.startswith("authz_outside_calls_total{"))


@pytest.mark.parametrize("mode", ["hang", "500", "garbage"])
def test_sec_83_an_endpoint_outage_fails_closed_within_the_timeout(tmp_path: Path, mode: str) -> None:
    with Endpoint(lambda seen: (200, {"active": True, "aud": RESOURCE, "roles": ["orders-reader"]})) as endpoint, \
            Echo() as echo:
        policy = write_policy(tmp_path, "https://as.example.com", endpoint.url + "/introspect", timeout="300ms")
        with Authz(policy, workers=1) as authz, \
                Envoy(tmp_path, EnvoyOptions(shape="edge", authz=[authz.grpc_address], upstream=echo.address)) as envoy:
            assert get(envoy, "opaque-known")[0] == 200  # the control: the endpoint answers
            endpoint.mode = mode
            status, _headers, body = get(envoy, "opaque-new")
            assert status == 401 and json.loads(body)["reason"] == "introspection_unavailable"
            assert get(envoy, "opaque-known")[0] == 200  # its answer is cached (max_ttl)


def test_private_key_jwt_authenticates_authz_to_the_real_provider(provider: OidcProvider, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    policy = write_policy(tmp_path, provider.issuer, provider.discovery["introspection_endpoint"])
    (tmp_path / "client.pem").write_bytes(SIGNER.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    text = policy.read_text().replace("      client_id: authz\n      client_secret_file: introspection.secret\n",
                                      "      client_id: authz-pkj\n"
                                      "      private_key_jwt: {key_file: client.pem, alg: RS256, kid: pkj-1}\n")
    policy.write_text(text)
    engine = Engine(load_policy(str(policy)))
    opaque = provider.client_credentials("partner", "partner-secret")
    decision = engine.decide_blocking(request(path="/api/orders/1", bearer=opaque), timeout=10)
    assert decision.allowed, decision
    assert decision.identity.claims["client_id"] == "partner"
    # the control: a key the provider does not know is refused by it
    (tmp_path / "client.pem").write_bytes(rsa_key("someone-else").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    wrong = Engine(load_policy(str(policy)))
    other = provider.client_credentials("partner", "partner-secret")
    refused = wrong.decide_blocking(request(path="/api/orders/1", bearer=other), timeout=10)
    assert refused.reason is Reason.INTROSPECTION_UNAVAILABLE
