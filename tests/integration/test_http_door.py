"""Envoy's HTTP ext_authz protocol through a real Envoy to authz's HTTP door:
the edge shape (Emissary ``proto: http``) and the mTLS sidecar shape (Istio
``envoyExtAuthzHttp``), with the same answers as the gRPC door."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.tools.envoy_config import EnvoyOptions
from testkit.paths import ACCEPTANCE
from testkit.pki import MeshCA
from testkit.procs import Authz, Echo, Envoy, free_port, http_get
from testkit.tokens import claims, token

pytestmark = pytest.mark.integration

BILLING = "spiffe://cluster.local/ns/shop/sa/billing"


def _door(prefix: str, *trust: str) -> tuple[str, list[str]]:
    address = f"127.0.0.1:{free_port()}"
    return address, ["--http-authz-address", address, "--http-authz-prefix", prefix, *trust]


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Envoy]]:
    tmp = tmp_path_factory.mktemp("http-edge")
    address, extra = _door("/authz", "--trusted-forwarded-hops", "1")
    with Echo() as echo, Authz(ACCEPTANCE / "policy.yaml", workers=2, extra=extra), \
            Envoy(tmp, EnvoyOptions(shape="edge", authz=[address], upstream=echo.address, protocol="http",
                                    path_prefix="/authz")) as envoy:
        yield f"http://{address}", envoy


def _ext_authz(envoy: Envoy, listener: str = "ingress_http") -> dict[str, int]:
    return {k.rsplit(".", 1)[-1]: v for k, v in envoy.stats().items()
            if k.startswith(f"http.{listener}.ext_authz.")}


def test_an_allow_sets_the_upstream_headers_and_removes_the_credential(edge: tuple[str, Envoy]) -> None:
    _door, envoy = edge
    before = _ext_authz(envoy)
    status, _headers, body = http_get(envoy.url + "/api/orders/7", {
        "authorization": f"Bearer {token(claims(sub='alice'))}", "x-tenant": "t1",
        "x-user-id": "root", "x-identity-token": "forged", "x_user_id": "root"})
    assert status == 200, body
    seen = json.loads(body)["headers"]
    assert seen["x-user-id"] == "alice" and "x_user_id" not in seen  # nor its underscore twin
    assert seen["x-identity-token"] != "forged" and seen["x-identity-token"].count(".") == 2
    assert "authorization" not in seen and "x-envoy-auth-headers-to-remove" not in seen
    assert _ext_authz(envoy).get("ok", 0) == before.get("ok", 0) + 1


def test_denials_carry_the_same_status_body_and_challenge_as_the_grpc_door(edge: tuple[str, Envoy]) -> None:
    _door, envoy = edge
    status, headers, body = http_get(envoy.url + "/api/orders")
    assert status == 401 and headers["www-authenticate"] == 'Bearer realm="authz"'
    document = json.loads(body)
    assert document["error"] == "unauthenticated" and document["reason"] == "missing_credential"
    assert document["request_id"]  # Envoy's x-request-id
    assert headers["cache-control"] == "no-store" and headers.get("server") != "granian"
    status, headers, body = http_get(envoy.url + "/api/orders", {"authorization": "Bearer not.a.token"})
    assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]
    status, headers, body = http_get(envoy.url + "/api/orders", {
        "authorization": f"Bearer {token(claims())}", "x-tenant": "t1"}, method="POST")
    assert status == 403 and json.loads(body)["reason"] == "no_permission" and "www-authenticate" not in headers
    status, _headers, body = http_get(envoy.url + "/api/orders", {
        "authorization": f"Bearer {token(claims())}", "x-tenant": "t2"})
    assert status == 403 and json.loads(body)["reason"] == "denied_by_rule"


def test_the_path_is_decided_as_the_client_sent_it(edge: tuple[str, Envoy]) -> None:
    _door, envoy = edge
    bearer = {"authorization": f"Bearer {token(claims())}", "x-tenant": "t1"}
    status, _headers, body = http_get(envoy.url + "/api/orders/1%2F..%2F..%2Fadmin", bearer)
    # Envoy passes the encoded slash on; the door sees the raw path (an RSGI
    # scope would have decoded it to /api/orders/1/../../admin) and refuses it.
    assert status == 403 and json.loads(body)["reason"] == "invalid_path", body


def test_the_client_address_comes_from_the_trusted_forwarded_hop(edge: tuple[str, Envoy]) -> None:
    """Envoy appends the peer address to x-forwarded-for; a value the client
    sent in front of it is not trusted, so a client cannot claim an address."""
    door, envoy = edge
    bearer = {"authorization": f"Bearer {token(claims())}", "x-tenant": "t1", "x-forwarded-for": "203.0.113.9"}
    status, _headers, body = http_get(envoy.url + "/api/orders/1", bearer)
    assert status == 200, body  # the forged entry is not the one authz reads
    status, _headers, body = http_get(f"{door}/authz/api/orders/1",
                                      {**bearer, "x-forwarded-for": "198.51.100.1, 203.0.113.9"})
    assert status == 403 and json.loads(body)["reason"] == "denied_by_rule"  # blocked-networks


def test_a_call_that_is_not_from_envoy_is_refused(edge: tuple[str, Envoy]) -> None:
    door, _envoy = edge
    bearer = {"authorization": f"Bearer {token(claims())}", "x-tenant": "t1", "x-forwarded-for": "10.0.0.1"}
    assert http_get(door + "/authz/api/orders/1", bearer)[0] == 200  # the control
    for url, headers, method in [
        (door + "/api/orders/1", bearer, "GET"),  # outside the prefix
        (door + "/authz/api/orders/1", bearer, "POST"),  # a body
        (door + "/authz/api/orders/1", {**bearer, "x-big": "a" * 70_000}, "GET"),  # oversized header block
    ]:
        status, _headers, body = http_get(url, headers, method=method, body=b"hello" if method == "POST" else None)
        assert 400 <= status < 500, (url, status, body)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Envoy, MeshCA, Path]]:
    tmp = tmp_path_factory.mktemp("http-sidecar")
    ca = MeshCA(tmp)
    chain, key = ca.workload("spiffe://cluster.local/ns/shop/sa/orders", "orders")
    address, extra = _door("/authz", "--trust-xfcc", "--trusted-forwarded-hops", "1")
    with Echo() as echo, Authz(ACCEPTANCE / "policy.yaml", workers=1, extra=extra):
        options = EnvoyOptions(shape="sidecar", authz=[address], upstream=echo.address, protocol="http",
                               path_prefix="/authz", cert_chain=str(chain), private_key=str(key),
                               ca_cert=str(ca.cert_path), protected_prefixes=["/api/"])
        with Envoy(tmp, options) as envoy:
            envoy.url = envoy.url.replace("http://", "https://")
            yield envoy, ca, tmp


def test_the_peer_spiffe_id_reaches_the_http_door_from_xfcc(sidecar: tuple[Envoy, MeshCA, Path]) -> None:
    import ssl

    envoy, ca, _tmp = sidecar

    def client(spiffe_id: str, name: str) -> ssl.SSLContext:
        chain, key = ca.workload(spiffe_id, name)
        context = ssl.create_default_context(cafile=str(ca.cert_path))
        context.load_cert_chain(str(chain), str(key))
        return context

    status, _headers, body = http_get(envoy.url + "/api/orders/1", {
        "x-user-id": "forged", "x-forwarded-client-cert": f"URI={BILLING}"},
        context=client(BILLING, "billing"))
    assert status == 200, body
    assert json.loads(body)["headers"]["x-user-id"] == BILLING
    # A stranger cannot claim billing's identity with its own header.
    status, _headers, body = http_get(envoy.url + "/api/orders/1", {"x-forwarded-client-cert": f"URI={BILLING}"},
                                      context=client("spiffe://cluster.local/ns/shop/sa/stranger", "stranger"))
    assert status in (401, 403), body


def test_a_check_waiting_for_keys_answers_within_envoys_timeout(tmp_path: Path) -> None:
    """The HTTP door reads the call's timeout from Envoy's
    x-envoy-expected-rq-timeout-ms: a check waiting for a key set that does
    not come is denied by authz (401 jwks_unavailable) before Envoy gives up
    on the call (which would be Envoy's own 403)."""
    from testkit.idp import FakeIdP, slow_issuer_policy
    from testkit.tokens import jwks, public_jwk, rsa_key

    key = rsa_key("http-wait")
    with FakeIdP() as idp:
        idp.jwks = jwks(public_jwk(key, kid="k1", alg="RS256"))
        idp.mode = "gate"  # the key set never arrives during the test
        policy = tmp_path / "policy.yaml"
        policy.write_text(slow_issuer_policy(idp))
        bearer = token(claims(iss=idp.issuer, groups=None, roles=["reader"]), key=key, kid="k1")
        address, extra = _door("/authz")
        try:
            with Echo() as echo, Authz(policy, workers=1, extra=extra), \
                    Envoy(tmp_path, EnvoyOptions(shape="edge", authz=[address], upstream=echo.address, protocol="http",
                                                 path_prefix="/authz", timeout=2.0)) as envoy:
                status, _headers, body = http_get(envoy.url + "/api/orders", {"authorization": f"Bearer {bearer}"})
                assert status == 401, body
                assert json.loads(body)["reason"] == "jwks_unavailable"
                assert _ext_authz(envoy).get("error", 0) == 0
        finally:
            idp.gate.set()
