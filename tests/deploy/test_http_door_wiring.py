"""The HTTP door as deploy/ wires it, end to end but for the proxy.

The deployed policy (deploy/kubernetes/configmap-policy.yaml, with keys made
here) runs under ``authz serve`` with the Deployment's HTTP-door flags. Each
call is shaped the way one of the two configured proxies would send it: only
the client headers that proxy forwards (the Emissary ``proto: http``
AuthService, or the Istio ``authz-http`` provider), ``/authz`` + the client's
path. Each answer is checked against what that proxy passes on: every header
authz sets on an allow must be one the proxy copies upstream, every header of
a denial one it gives the client. A header list that misses something the
policy reads shows up here as a wrong decision, not only as a list mismatch.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authz.metadata import BUILTIN
from testkit.pki import MeshCA
from testkit.procs import Authz, free_port
from tests.deploy.manifests import find, mesh_configs
from tests.deploy.test_manifests import (
    AUTH_HTTP,
    EMISSARY_AUTHORIZATION_HEADERS,
    EMISSARY_REQUEST_HEADERS,
    args,
    policy,
    providers_by_kind,
)
from tests.deploy.test_policy_configmap import API_KEY, Cluster

pytestmark = pytest.mark.integration

#: Envoy puts these in every HTTP check itself (method and path are the request line).
ENVOY_REQUEST_HEADERS = frozenset({"host", "content-length"})
#: Istio adds these to headersToDownstreamOnDeny once the list is set
#: (istio/api mesh/v1alpha1/config.proto, EnvoyExternalAuthorizationHttpProvider).
ISTIO_DENY_HEADERS = frozenset({"content-length", "www-authenticate", "location"})
#: Set by the HTTP server on every answer; Envoy never copies them.
TRANSPORT_HEADERS = frozenset({"server", "date", "content-length"})
REMOVE = "x-envoy-auth-headers-to-remove"


@dataclass(frozen=True)
class Proxy:
    """What one proxy configuration forwards to authz and passes on."""

    name: str
    prefix: str
    request: frozenset[str]
    upstream: frozenset[str]
    client_on_deny: frozenset[str]


def emissary() -> Proxy:
    spec = find("AuthService", "authz", under=AUTH_HTTP)["spec"]
    answered = frozenset(spec["allowed_authorization_headers"]) | EMISSARY_AUTHORIZATION_HEADERS
    return Proxy(
        "emissary",
        spec["path_prefix"],
        frozenset(spec["allowed_request_headers"])
        | EMISSARY_REQUEST_HEADERS
        | ENVOY_REQUEST_HEADERS,
        answered,
        answered,
    )


def istio() -> Proxy:
    # The three forms agree (test_manifests); any one will do.
    _, mesh = next(iter(mesh_configs()))
    provider = providers_by_kind(mesh)["envoyExtAuthzHttp"]["envoyExtAuthzHttp"]
    return Proxy(
        "istio",
        provider["pathPrefix"],
        frozenset(provider["includeRequestHeadersInCheck"]) | ENVOY_REQUEST_HEADERS,
        frozenset(provider["headersToUpstreamOnAllow"]),
        frozenset(provider["headersToDownstreamOnDeny"]) | ISTIO_DENY_HEADERS,
    )


PROXIES = {"emissary": emissary, "istio": istio}


@dataclass
class Door:
    cluster: Cluster
    address: str

    def call(
        self, proxy: Proxy, method: str, path: str, client_headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """The check ``proxy`` sends for a client request: its prefix + the
        path, and only the client headers it forwards."""
        forwarded = {k: v for k, v in client_headers.items() if k in proxy.request}
        host, port = self.address.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.putrequest(
                method, proxy.prefix + path, skip_host=True, skip_accept_encoding=True
            )
            for name, value in forwarded.items():
                connection.putheader(name, value)
            connection.putheader("content-length", "0")
            connection.endheaders()
            response = connection.getresponse()
            headers = {k.lower(): v for k, v in response.getheaders()}
            return response.status, headers, response.read()
        finally:
            connection.close()


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    cluster = Cluster(tmp_path_factory.mktemp("http-door") / "etc-authz")
    flags = args()
    address = f"127.0.0.1:{free_port()}"
    extra = [
        "--http-authz-address",
        address,
        "--http-authz-prefix",
        flags["--http-authz-prefix"],
        "--trusted-forwarded-hops",
        flags["--trusted-forwarded-hops"],
    ]
    if "--trust-xfcc" in flags:
        extra.append("--trust-xfcc")
    if "--grpc-client-ca" in flags:
        # The gRPC door is bound to callers (docs/security.md 60): its TLS
        # files, as cert-manager writes them, from a test CA.
        tls = tmp_path_factory.mktemp("tls")
        ca = MeshCA(tls)
        chain, key = ca.workload("spiffe://cluster.local/ns/authz/sa/authz", "authz")
        extra += ["--grpc-tls-cert", str(chain), "--grpc-tls-key", str(key), "--grpc-client-ca", str(ca.cert_path)]
    with Authz(Path(cluster.config), workers=1, extra=extra):
        yield Door(cluster, address)


def client(**headers: str) -> dict[str, str]:
    """A client request's headers, including some no proxy should forward
    and an x-forwarded-for the client made up (the edge Envoy appends its
    peer after it)."""
    base = {
        "host": "api.example.com",
        "user-agent": "curl/8",
        "accept": "*/*",
        "x-unrelated": "1",
        "x-request-id": "req-7",
        "x-forwarded-proto": "https",
        "x-forwarded-for": "198.51.100.1, 203.0.113.9",
        "x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/shop/sa/billing",
    }
    base.update({k.replace("_", "-"): v for k, v in headers.items()})
    return base


def metadata_headers() -> frozenset[str]:
    """The headers that carry authz's dynamic metadata (docs/http-door.md):
    for Envoy's dynamic_metadata_from_headers, never to be passed on."""
    return frozenset(BUILTIN) | frozenset(policy()["response"].get("metadata", {}))


def passed_on(headers: dict[str, str]) -> set[str]:
    return set(headers) - TRANSPORT_HEADERS - {REMOVE} - metadata_headers()


def test_sec_55_no_proxy_passes_the_metadata_headers_on(proxy: Proxy) -> None:
    assert metadata_headers().isdisjoint(proxy.upstream | proxy.client_on_deny)


@pytest.fixture(params=sorted(PROXIES))
def proxy(request: pytest.FixtureRequest) -> Proxy:
    return PROXIES[request.param]()


def test_an_api_key_reads_orders_and_the_answer_survives_the_proxy(
    door: Door, proxy: Proxy
) -> None:
    status, headers, body = door.call(proxy, "GET", "/api/orders", client(x_api_key=API_KEY))
    assert status == 200, body
    assert headers["x-user-id"] == "partner-acme"
    assert headers["x-identity-token"].count(".") == 2
    assert passed_on(headers) <= proxy.upstream
    removed = {h.strip() for h in headers[REMOVE].split(",")}
    response = policy()["response"]
    # The policy's removals, the underscore twin of every header authz sets or
    # removes, and its metadata keys (authz's own too: the HTTP door answers them as headers).
    names = [*response["remove"], *response["headers"], response["identity_token"]["header"]]
    assert removed == (set(response["remove"]) | {n.replace("-", "_") for n in names if "-" in n}
                       | set(BUILTIN) | set(response.get("metadata", {})))


def test_a_user_token_with_its_tenant_reads_orders(door: Door, proxy: Proxy) -> None:
    # tenant-isolation reads x-tenant: a proxy that does not forward it would
    # make this a denied_by_rule.
    token = door.cluster.token(groups=["orders-reader"], tenant="t1")
    status, headers, body = door.call(
        proxy, "GET", "/api/orders/7", client(authorization=f"Bearer {token}", x_tenant="t1")
    )
    assert status == 200, body
    assert headers["x-user-id"] == "alice"
    assert passed_on(headers) <= proxy.upstream
    status, _headers, body = door.call(
        proxy, "GET", "/api/orders/7", client(authorization=f"Bearer {token}", x_tenant="t2")
    )
    assert status == 403 and json.loads(body)["reason"] == "denied_by_rule"


def test_a_denial_reaches_the_client_whole(door: Door, proxy: Proxy) -> None:
    status, headers, body = door.call(proxy, "GET", "/api/orders", client())
    assert status == 401
    document: dict[str, Any] = json.loads(body)
    assert document == {
        "error": "unauthenticated",
        "reason": "missing_credential",
        "request_id": "req-7",
    }
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    assert headers["www-authenticate"].startswith("Bearer")
    assert passed_on(headers) <= proxy.client_on_deny


def test_public_paths_are_anonymous(door: Door, proxy: Proxy) -> None:
    status, headers, _body = door.call(proxy, "GET", "/public/logo.svg", client())
    assert status == 200
    assert passed_on(headers) <= proxy.upstream


def test_route_context_fails_closed_on_the_admin_routes_only(door: Door, proxy: Proxy) -> None:
    """No context reaches the HTTP door: the rule reading it denies its own
    paths, even to an admin user token (docs/deploy-edge-stack.md)."""
    token = door.cluster.token(groups=["orders-admin"], tenant="t1")
    bearer = client(authorization=f"Bearer {token}", x_tenant="t1")
    status, _headers, body = door.call(proxy, "DELETE", "/api/orders/admin/7", bearer)
    assert status == 403 and json.loads(body)["reason"] == "denied_by_rule"
    status, _headers, body = door.call(proxy, "DELETE", "/api/orders/7", bearer)
    assert status == 200, body
