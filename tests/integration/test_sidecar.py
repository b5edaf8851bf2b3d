"""Real mTLS through a real Envoy shaped like an Istio sidecar with a CUSTOM policy."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.tools.envoy_config import EnvoyOptions
from testkit.paths import ACCEPTANCE
from testkit.pki import MeshCA
from testkit.procs import Authz, Echo, Envoy, http_get

BILLING = "spiffe://cluster.local/ns/shop/sa/billing"
STRANGER = "spiffe://cluster.local/ns/shop/sa/stranger"


class Mesh:
    def __init__(self, tmp: Path) -> None:
        self.ca = MeshCA(tmp)
        self.other_ca = MeshCA(tmp, "other-ca")
        self.server = self.ca.workload("spiffe://cluster.local/ns/shop/sa/orders", "orders")

    def client(self, spiffe_id: str, name: str, *, ca: MeshCA | None = None) -> ssl.SSLContext:
        chain, key = (ca or self.ca).workload(spiffe_id, name)
        context = ssl.create_default_context(cafile=str(self.ca.cert_path))
        context.load_cert_chain(str(chain), str(key))
        return context


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Envoy, Mesh]]:
    tmp = tmp_path_factory.mktemp("sidecar")
    mesh = Mesh(tmp)
    chain, key = mesh.server
    with Echo() as echo, Authz(ACCEPTANCE / "policy.yaml", workers=2) as authz:
        options = EnvoyOptions(shape="sidecar", authz=[authz.grpc_address], upstream=echo.address,
                               cert_chain=str(chain), private_key=str(key), ca_cert=str(mesh.ca.cert_path),
                               protected_prefixes=["/api/"])
        with Envoy(tmp, options) as envoy:
            envoy.url = envoy.url.replace("http://", "https://")
            yield envoy, mesh


def _ext_authz(envoy: Envoy) -> dict[str, int]:
    return {k.rsplit(".", 1)[-1]: v for k, v in envoy.stats().items() if k.startswith("http.inbound_http.ext_authz.")}


def test_listed_peer_is_allowed_by_its_spiffe_id(stack: tuple[Envoy, Mesh]) -> None:
    envoy, mesh = stack
    before = _ext_authz(envoy)
    status, _headers, body = http_get(envoy.url + "/api/orders/1", {"x-user-id": "forged"},
                                      context=mesh.client(BILLING, "billing"))
    assert status == 200, body
    seen = json.loads(body)["headers"]
    assert seen["x-user-id"] == BILLING  # the peer's SPIFFE ID, not the forged value
    assert _ext_authz(envoy).get("ok", 0) == before.get("ok", 0) + 1


def test_unlisted_peer_is_denied(stack: tuple[Envoy, Mesh]) -> None:
    envoy, mesh = stack
    status, headers, body = http_get(envoy.url + "/api/orders/1", context=mesh.client(STRANGER, "stranger"))
    assert status == 401
    assert json.loads(body)["reason"] == "missing_credential"
    assert headers["www-authenticate"].startswith("Bearer")


def test_listed_peer_still_needs_a_permission(stack: tuple[Envoy, Mesh]) -> None:
    envoy, mesh = stack
    status, _headers, body = http_get(envoy.url + "/api/orders/1", method="DELETE",
                                      context=mesh.client(BILLING, "billing2"))
    assert status == 403
    assert json.loads(body)["reason"] == "no_permission"


def test_paths_outside_the_custom_policy_skip_ext_authz(stack: tuple[Envoy, Mesh]) -> None:
    envoy, mesh = stack
    before = _ext_authz(envoy)
    status, _headers, _body = http_get(envoy.url + "/metrics-not-protected", context=mesh.client(STRANGER, "stranger2"))
    assert status == 200
    after = _ext_authz(envoy)
    assert after["disabled"] == before.get("disabled", 0) + 1  # the shadow RBAC mark was absent
    assert {k: v for k, v in after.items() if k != "disabled"} == {k: v for k, v in before.items() if k != "disabled"}


def test_certificate_from_another_ca_never_reaches_authz(stack: tuple[Envoy, Mesh]) -> None:
    envoy, mesh = stack
    context = mesh.client(BILLING, "impostor", ca=mesh.other_ca)
    with pytest.raises(OSError):
        http_get(envoy.url + "/api/orders/1", context=context)
