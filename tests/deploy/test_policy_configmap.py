"""The policy in deploy/kubernetes/configmap-policy.yaml, as a pod sees it.

The kubelet materialises a ConfigMap or Secret volume as a directory of
symlinks into a timestamped directory (``policy.yaml -> ..data/policy.yaml``,
``..data -> ..2026_01_01_...``) and swaps ``..data`` atomically on update.
These tests rebuild that layout in a temporary directory, put freshly made keys
where the authz-keys Secret would put them, and check that the policy loads,
that its ``../keys/...`` paths resolve through the symlinks, that an update
swapped in the kubelet's way is seen as a change, and that it decides as its
comments promise (including the Emissary ``auth_context_extensions`` rule).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from authz.cli import main as authz_main
from authz.config import load_policy
from testkit.paths import REPO
from testkit.requests import check_request_json
from tests.deploy.manifests import find, load_docs

K8S = REPO / "deploy" / "kubernetes"
API_KEY = "deploy-test-api-key-0123456789"
KID = "corp-test"


def atomic_volume(
    root: Path, files: dict[str, bytes], version: str = "..2026_01_01_00_00_00.000000001"
) -> Path:
    """Write ``files`` the way the kubelet's AtomicWriter does; return the mount."""
    root.mkdir(parents=True, exist_ok=True)
    payload = root / version
    payload.mkdir()
    for name, content in files.items():
        (payload / name).write_bytes(content)
    temporary = root / "..data_tmp"
    temporary.symlink_to(version)
    temporary.replace(root / "..data")
    for name in files:
        link = root / name
        if not link.is_symlink():
            link.symlink_to(Path("..data") / name)
    return root


def b64url(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Cluster:
    """The two volumes of an authz pod, under ``root`` instead of /etc/authz."""

    def __init__(self, root: Path) -> None:
        config_map = find("ConfigMap", "authz-policy", under=K8S)
        self.policy_text = config_map["data"]["policy.yaml"]
        self.idp_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.idp_key.public_key().public_numbers()
        jwks = {
            "keys": [
                {
                    "kty": "RSA",
                    "kid": KID,
                    "alg": "RS256",
                    "use": "sig",
                    "n": b64url(numbers.n),
                    "e": b64url(numbers.e),
                }
            ]
        }
        identity_key = ec.generate_private_key(ec.SECP256R1())
        api_keys = {
            "keys": [
                {
                    "subject": "partner-acme",
                    "sha256": hashlib.sha256(API_KEY.encode()).hexdigest(),
                    "roles": ["orders-reader"],
                }
            ]
        }
        self.keys = {
            "identity-es256.pem": identity_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "corp.jwks.json": json.dumps(jwks).encode(),
            "api-keys.yaml": yaml.safe_dump(api_keys).encode(),
        }
        self.root = root
        atomic_volume(root / "keys", self.keys)
        atomic_volume(root / "policy", {"policy.yaml": self.policy_text.encode()})
        self.config = root / "policy" / "policy.yaml"

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": "https://idp.example.com",
            "aud": "orders-api",
            "sub": "alice",
            "iat": now,
            "exp": now + 600,
            **claims,
        }
        return jwt.encode(body, self.idp_key, algorithm="RS256", headers={"kid": KID})

    def decide(self, capsys: pytest.CaptureFixture[str], request: dict[str, Any]) -> dict[str, Any]:
        path = self.root / "request.json"
        path.write_text(json.dumps(request), encoding="utf-8")
        capsys.readouterr()
        code = authz_main(["check", "--config", str(self.config), "--request", str(path)])
        out = capsys.readouterr().out
        decision: dict[str, Any] = json.loads(out)
        assert code == (0 if decision["allowed"] else 1)
        return decision


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return Cluster(tmp_path / "etc-authz")


def test_secret_example_names_the_files_the_policy_needs(cluster: Cluster) -> None:
    (secret,) = [d.body for d in load_docs(K8S / "secret-keys.example.yaml")]
    assert set(secret["stringData"]) == set(cluster.keys)


def test_policy_loads_through_kubelet_symlinks(cluster: Cluster) -> None:
    policy = load_policy(str(cluster.config))
    keys_dir = os.path.abspath(cluster.root / "keys")
    # Every key file resolves into the keys volume, not into the ConfigMap's
    # timestamped directory (which a realpath-based resolution would give).
    key_files = [f for f in policy.files if not f.endswith("policy.yaml")]
    assert sorted(os.path.basename(f) for f in key_files) == sorted(cluster.keys)
    assert all(os.path.dirname(f) == keys_dir for f in key_files)


def test_kubelet_style_update_changes_what_is_read(cluster: Cluster) -> None:
    before = load_policy(str(cluster.config))
    updated = cluster.policy_text.replace("ttl: 60s", "ttl: 30s")
    assert updated != cluster.policy_text
    atomic_volume(
        cluster.root / "policy",
        {"policy.yaml": updated.encode()},
        version="..2026_01_01_00_01_00.000000002",
    )
    assert cluster.config.read_text(encoding="utf-8") == updated
    after = load_policy(str(cluster.config))
    assert before.files == after.files


def test_api_key_reads_orders(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    decision = cluster.decide(
        capsys, check_request_json("GET", "/api/orders", headers={"x-api-key": API_KEY})
    )
    assert (decision["allowed"], decision["status"]) == (True, 200)
    assert decision["headers"]["x-user-id"] == "partner-acme"
    assert "x-identity-token" in decision["headers"]


def test_admin_route_context_refuses_api_keys(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    request = check_request_json(
        "GET",
        "/api/orders/admin/7",
        headers={"x-api-key": API_KEY},
        context={"route": "orders-admin"},
    )
    decision = cluster.decide(capsys, request)
    assert (decision["allowed"], decision["status"], decision["rule"]) == (
        False,
        403,
        "admin-routes-need-user-token",
    )


def test_route_context_outside_the_admin_paths_is_not_read(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """The context rule is scoped to the admin Mapping's paths (the HTTP door
    cannot carry context, and a deny rule reading it fails closed there)."""
    request = check_request_json(
        "GET", "/api/orders", headers={"x-api-key": API_KEY}, context={"route": "orders-admin"}
    )
    decision = cluster.decide(capsys, request)
    assert (decision["allowed"], decision["status"]) == (True, 200)


def test_admin_route_context_admits_user_tokens(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    token = cluster.token(groups=["orders-admin"])
    request = check_request_json(
        "DELETE",
        "/api/orders/admin/7",
        headers={"authorization": f"Bearer {token}"},
        context={"route": "orders-admin"},
    )
    decision = cluster.decide(capsys, request)
    assert (decision["allowed"], decision["status"]) == (True, 200)
    assert decision["headers"]["x-user-id"] == "alice"


def test_mesh_peer_is_admitted_by_its_spiffe_id(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    request = check_request_json(
        "GET", "/api/orders/42", principal="spiffe://cluster.local/ns/shop/sa/billing"
    )
    decision = cluster.decide(capsys, request)
    assert (decision["allowed"], decision["status"]) == (True, 200)
    assert "x-identity-token" in decision["headers"]


def test_anonymous_caller_is_challenged_but_public_paths_are_open(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    denied = cluster.decide(capsys, check_request_json("GET", "/api/orders"))
    assert (denied["allowed"], denied["status"]) == (False, 401)
    public = cluster.decide(capsys, check_request_json("GET", "/public/logo.png"))
    assert (public["allowed"], public["status"]) == (True, 200)
