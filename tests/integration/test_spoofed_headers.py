"""Class 1 and 2 of docs/security.md through real Envoy, on both doors.

Class 1: a client-sent copy of a header the policy sets, removes or signs
(conditional ones and metadata keys included) never reaches the upstream,
through the configs ``authz envoy-config --config`` writes (edge and mTLS
sidecar, both doors) and through a hand-written one
(tests/fixtures/envoy/hand-written-http.yaml, HTTP door).

Class 2: the same requests through both doors present the same attributes
to the policy (a response header of the policy shows them to the upstream).
"""

from __future__ import annotations

import json
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authz.config import load_policy
from authz.tools.envoy_config import EnvoyOptions
from authz.tools.policy_headers import PolicyHeaders
from testkit.paths import ACCEPTANCE
from testkit.pki import MeshCA
from testkit.procs import Authz, Echo, Envoy, Proc, free_port, http_get, wait_listening
from testkit.tokens import claims, token

pytestmark = pytest.mark.integration

BILLING = "spiffe://cluster.local/ns/shop/sa/billing"
HAND_WRITTEN = Path(__file__).resolve().parents[1] / "fixtures" / "envoy" / "hand-written-http.yaml"

RESPONSE = """\
response:
  headers:
    x-user-id: identity.subject
    x-user-roles: identity.roles.join(",")
    x-tenant: '"tenant" in identity.claims ? identity.claims.tenant : ""'
    x-seen: 'request.method + "~" + request.host + "~" + request.path + "~" + request.scheme + "~" + identity.subject \
      + "~" + request.headers.map(k, k + "=" + request.headers[k]).join("|")'
  remove: [authorization]
  metadata:
    tier: '"gold"'
"""
#: What a client forges: every header the policy owns, and an underscore twin.
FORGED = {"x-user-id": "root", "x-user-roles": "admin", "x-tenant": "evil", "x-identity-token": "forged",
          "tier": "platinum", "reason": "allowed", "x_user_roles": "admin", "x-seen": "forged"}


def _policy(tmp: Path) -> Path:
    for name in ("policy.yaml", "corp.jwks.json", "identity-es256.pem"):
        shutil.copy(ACCEPTANCE / name, tmp / name)
    policy = tmp / "policy.yaml"
    text = policy.read_text()
    head, _, tail = text.partition(
        "response:\n  headers:\n    x-user-id: identity.subject\n  remove: [authorization]\n")
    # x-tenant is the policy's here: the tenant rule reads none of the client's.
    head = head.replace('identity.kind == "jwt" && request.headers["x-tenant"] != identity.claims.tenant',
                        'request.method == "TRACE"')
    policy.write_text(head + RESPONSE + tail)
    return policy


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _policy(tmp_path_factory.mktemp("spoof-policy"))


CONFIGS = ["edge-grpc", "edge-http", "hand-written-http"]


@pytest.fixture(scope="module", params=CONFIGS)
def proxy(request: pytest.FixtureRequest, policy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    tmp = tmp_path_factory.mktemp(request.param)
    grpc = f"127.0.0.1:{free_port()}"
    http = f"127.0.0.1:{free_port()}"
    extra = ["--grpc-address", grpc, "--http-authz-address", http, "--http-authz-prefix", "/authz",
             "--trusted-forwarded-hops", "1"]
    headers = PolicyHeaders.of(load_policy(str(policy)))
    protocol = "grpc" if request.param.endswith("grpc") else "http"
    with Echo() as echo, Authz(policy, workers=1, extra=extra):
        options = EnvoyOptions(shape="edge", authz=[grpc if protocol == "grpc" else http], upstream=echo.address,
                               protocol=protocol, path_prefix="/authz", upstream_headers=headers.upstream,
                               metadata_keys=headers.metadata, owned_headers=headers.owned)
        if request.param == "hand-written-http":
            with HandWritten(tmp, http, echo.address) as envoy:
                yield envoy  # type: ignore[misc]
            return
        with Envoy(tmp, options) as envoy:
            yield envoy


class HandWritten:
    """A real Envoy on tests/fixtures/envoy/hand-written-http.yaml, its
    addresses filled in (the same attributes the tests read of :class:`Envoy`)."""

    def __init__(self, tmp: Path, authz: str, upstream: str) -> None:
        self.listen_port, admin_port = free_port(), free_port()
        text = HAND_WRITTEN.read_text()
        for name, value in (("listen_port", self.listen_port), ("admin_port", admin_port),
                            ("authz_port", authz.rsplit(":", 1)[1]), ("upstream_port", upstream.rsplit(":", 1)[1])):
            text = text.replace("{" + name + "}", str(value))
        self.config = tmp / "hand-written.yaml"
        self.config.write_text(text)
        self.url = f"http://127.0.0.1:{self.listen_port}"
        self.proc = Proc(["envoy", "-c", str(self.config), "--disable-hot-restart", "--concurrency", "1", "-l", "info",
                          "--log-format", "[%l] %v"], name="envoy")

    def __enter__(self) -> HandWritten:
        self.proc.wait_for("starting main dispatch loop")
        wait_listening(self.listen_port, self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stop()


def _upstream(envoy: Envoy, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    status, _headers, body = http_get(envoy.url + path, headers)
    return status, (json.loads(body)["headers"] if status == 200 else {})


def test_an_allow_replaces_or_removes_every_forged_header(proxy: Envoy) -> None:
    status, seen = _upstream(proxy, "/api/orders/7",
                             {"authorization": f"Bearer {token(claims(sub='alice'))}", **FORGED})
    assert status == 200
    assert seen["x-user-id"] == "alice" and seen["x-user-roles"] == "orders-reader" and seen["x-tenant"] == "t1"
    assert seen["x-identity-token"].count(".") == 2 and seen["x-identity-token"] != "forged"
    assert "x-envoy-auth-headers-to-remove" not in seen
    for name in ("authorization", "tier", "reason", "x_user_roles"):
        assert name not in seen, name


def test_a_conditional_header_this_answer_does_not_set_is_removed(proxy: Envoy) -> None:
    bearer = {"authorization": f"Bearer {token(claims(sub='bob', tenant=None))}"}
    status, seen = _upstream(proxy, "/api/orders/7", {**bearer, **FORGED})
    assert status == 200 and seen["x-user-id"] == "bob"
    assert "x-tenant" not in seen  # no tenant claim: authz sets none, and the client's is gone


def test_an_anonymous_allow_carries_no_forged_identity(proxy: Envoy) -> None:
    status, seen = _upstream(proxy, "/healthz", FORGED)
    assert status == 200
    for name in ("x-user-id", "x-user-roles", "x-tenant", "x-identity-token", "tier", "x_user_roles"):
        assert name not in seen, name


def test_a_denial_never_reaches_the_upstream(proxy: Envoy) -> None:
    status, _headers, body = http_get(proxy.url + "/api/orders/7", FORGED)
    assert status == 401 and json.loads(body)["reason"] == "missing_credential"


def test_where_no_check_runs_the_config_strips_them(proxy: Envoy) -> None:
    status, seen = _upstream(proxy, "/.well-known/x", FORGED)
    assert status == 200
    for name in FORGED:
        assert name not in seen, name


@pytest.fixture(scope="module")
def both_doors(policy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Envoy, Envoy]]:
    grpc = f"127.0.0.1:{free_port()}"
    http = f"127.0.0.1:{free_port()}"
    extra = ["--grpc-address", grpc, "--http-authz-address", http, "--http-authz-prefix", "/authz",
             "--trusted-forwarded-hops", "1"]
    headers = PolicyHeaders.of(load_policy(str(policy)))
    with Echo() as echo, Authz(policy, workers=1, extra=extra):
        def options(protocol: str, address: str) -> EnvoyOptions:
            return EnvoyOptions(shape="edge", authz=[address], upstream=echo.address, protocol=protocol,
                                path_prefix="/authz", upstream_headers=headers.upstream, owned_headers=headers.owned)
        with Envoy(tmp_path_factory.mktemp("grpc"), options("grpc", grpc)) as via_grpc, \
                Envoy(tmp_path_factory.mktemp("http"), options("http", http)) as via_http:
            yield via_grpc, via_http


def _attributes(envoy: Envoy, path: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    status, seen = _upstream(envoy, path, {**headers, "x-request-id": "rid-parity"})
    assert status == 200, seen
    *attributes, listed = seen["x-seen"].split("~", 5)
    line = "~".join(attributes)
    values = dict(item.partition("=")[::2] for item in listed.split("|"))
    # Each Envoy listens on its own port: the authority differs by it alone.
    port = envoy.url.rsplit(":", 1)[1]
    return line.replace(port, "PORT"), {k: v.replace(port, "PORT") for k, v in values.items()}


@pytest.mark.parametrize("path", ["/api/orders/7", "/api/orders/7?a=1&b=%2F", "/healthz"])
def test_both_doors_present_the_same_attributes(both_doors: tuple[Envoy, Envoy], path: str) -> None:
    """Not source.address: from a loopback peer, as here, Envoy appends its
    own address to x-forwarded-for rather than the peer's (docs/http-door.md);
    tests/integration/test_http_door.py checks the trusted hop."""
    via_grpc, via_http = both_doors
    headers = {"authorization": f"Bearer {token(claims(sub='alice'))}", "x-custom": "a, b", "cookie": "c=1"}
    grpc_line, grpc_headers = _attributes(via_grpc, path, headers)
    http_line, http_headers = _attributes(via_http, path, headers)
    assert http_line == grpc_line
    # Envoy gives each request an id of its own: both carry one.
    assert grpc_headers.pop("x-request-id") and http_headers.pop("x-request-id")
    assert http_headers == grpc_headers
    # The pseudo-headers are there, and nothing Envoy set on its own call to the HTTP door.
    assert {":authority", ":method", ":path", ":scheme"} <= set(http_headers)
    assert not {"content-length", "x-envoy-internal", "x-envoy-expected-rq-timeout-ms", "host"} & set(http_headers)


@pytest.fixture(scope="module", params=["grpc", "http"])
def sidecar(request: pytest.FixtureRequest, policy: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Envoy, Any]]:
    """The mTLS sidecar shape, its CUSTOM policy covering /api/ only."""
    tmp = tmp_path_factory.mktemp(f"sidecar-{request.param}")
    ca = MeshCA(tmp)
    chain, key = ca.workload("spiffe://cluster.local/ns/shop/sa/orders", "orders")
    grpc = f"127.0.0.1:{free_port()}"
    http = f"127.0.0.1:{free_port()}"
    extra = ["--grpc-address", grpc, "--http-authz-address", http, "--http-authz-prefix", "/authz",
             "--trusted-forwarded-hops", "1", "--trust-xfcc"]
    headers = PolicyHeaders.of(load_policy(str(policy)))
    with Echo() as echo, Authz(policy, workers=1, extra=extra):
        options = EnvoyOptions(shape="sidecar", authz=[grpc if request.param == "grpc" else http],
                               upstream=echo.address, protocol=request.param, path_prefix="/authz",
                               cert_chain=str(chain), private_key=str(key), ca_cert=str(ca.cert_path),
                               protected_prefixes=["/api/"], upstream_headers=headers.upstream,
                               metadata_keys=headers.metadata, owned_headers=headers.owned)
        with Envoy(tmp, options) as envoy:
            envoy.url = envoy.url.replace("http://", "https://")
            caller_chain, caller_key = ca.workload(BILLING, "billing")
            context = ssl.create_default_context(cafile=str(ca.cert_path))
            context.load_cert_chain(str(caller_chain), str(caller_key))
            yield envoy, context


def test_sidecar_a_peer_allow_and_an_uncovered_path_carry_no_forged_header(sidecar: tuple[Envoy, Any]) -> None:
    envoy, context = sidecar
    status, _headers, body = http_get(envoy.url + "/api/orders/7", FORGED, context=context)
    assert status == 200, body
    seen = json.loads(body)["headers"]
    assert seen["x-user-id"] == BILLING and seen["x-user-roles"] == "orders-reader"
    for name in ("x-tenant", "tier", "reason", "x_user_roles"):  # a peer has no tenant claim
        assert name not in seen, name
    # Outside the CUSTOM policy's paths no Check runs: the route strips them.
    status, _headers, body = http_get(envoy.url + "/public/page", FORGED, context=context)
    assert status == 200, body
    seen = json.loads(body)["headers"]
    for name in FORGED:
        assert name not in seen, name
