"""Client certificates as a credential through real Envoys, on both doors,
with the configs ``authz envoy-config`` writes (docs/security.md 75-79):

- downstream mTLS at the edge (``--downstream-tls-cert/--downstream-tls-key/
  --downstream-client-ca``): the gRPC door reads Envoy's
  ``source.certificate`` (``include_peer_certificate``), the HTTP door the
  element the edge itself writes to ``x-forwarded-client-cert``
  (``SANITIZE_SET``, ``serve --trust-xfcc``);
- an XFCC-forwarding hop: a first Envoy terminates the client's mTLS
  (``SANITIZE_SET`` or ``APPEND_FORWARD``) in front of the edge, which forwards
  the header as it came (``--xfcc-from-hop``); authz reads the hop's element
  only, never one a client wrote before it.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from authz.tools.envoy_config import EnvoyOptions
from testkit.pki import MeshCA
from testkit.procs import Authz, Echo, Envoy, Proc, free_port, http_get, wait_listening

SHOP = "spiffe://cluster.local/ns/shop/sa/web"
OTHER = "spiffe://cluster.local/ns/other/sa/job"

POLICY = """\
version: 1
certificates:
  ca_file: {ca}
  from: [client-cert, peer, xfcc]   # a client-cert header reaching authz is refused: serve trusts no hop for it
  roles:
    "spiffe://cluster.local/ns/shop/sa/*": [orders-reader]
roles:
  orders-reader:
    - {{methods: [GET], paths: ["/api/orders/**"]}}
response:
  headers: {{x-user-id: identity.subject, x-cert-serial: identity.certificate.serial}}
"""


class Pki:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.clients = MeshCA(tmp, "clients-ca")
        self.stranger_ca = MeshCA(tmp, "stranger-ca")
        self.servers = MeshCA(tmp, "servers-ca")
        self.edge = self.servers.workload("spiffe://cluster.local/ns/edge/sa/gateway", "edge")
        self.web = self.clients.client("web", uris=(SHOP,))
        self.other = self.clients.client("other", uris=(OTHER,))
        self.stranger = self.stranger_ca.client("stranger", uris=(SHOP,))
        # The edge's TLS accepts both client CAs; the policy trusts one: authz decides.
        self.both = tmp / "both-cas.pem"
        self.both.write_bytes(self.clients.cert_path.read_bytes() + self.stranger_ca.cert_path.read_bytes())

    def client(self, who: tuple[Any, Path, Path]) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.servers.cert_path))
        context.load_cert_chain(str(who[1]), str(who[2]))
        return context


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Authz, Pki, str]]:
    tmp = tmp_path_factory.mktemp("client-certs")
    pki = Pki(tmp)
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY.format(ca=pki.clients.cert_path))
    http_door = f"127.0.0.1:{free_port()}"
    with Authz(policy, workers=1, extra=["--http-authz-address", http_door, "--http-authz-prefix", "/authz",
                                         "--trust-xfcc"]) as authz:
        yield authz, pki, http_door


def _options(served: tuple[Authz, Pki, str], echo: Echo, protocol: str, **extra: Any) -> EnvoyOptions:
    authz, _pki, http_door = served
    return EnvoyOptions(shape="edge", authz=[authz.grpc_address if protocol == "grpc" else http_door],
                        protocol=protocol, upstream=echo.address, upstream_headers=("x-user-id", "x-cert-serial"),
                        **extra)


def _mtls_edge(served: tuple[Authz, Pki, str], echo: Echo, protocol: str) -> EnvoyOptions:
    pki = served[1]
    chain, key = pki.edge
    return _options(served, echo, protocol, downstream_tls_cert=str(chain), downstream_tls_key=str(key),
                    downstream_client_ca=str(pki.both))


def _stolen_element(pki: Pki) -> str:
    """An XFCC element a client writes itself, with a real certificate of another workload."""
    text = pki.other[0].public_bytes(serialization.Encoding.PEM).decode()
    return f'By=spiffe://x;Cert="{quote(text)}";URI={OTHER}'


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_downstream_mtls_at_the_edge_makes_the_certificate_the_identity(
        served: tuple[Authz, Pki, str], protocol: str) -> None:
    pki = served[1]
    with Echo() as echo, Envoy(pki.tmp, _mtls_edge(served, echo, protocol)) as envoy:
        url = envoy.url.replace("http://", "https://") + "/api/orders/1"
        status, _headers, body = http_get(url, context=pki.client(pki.web))
        assert status == 200, body
        upstream = json.loads(body)["headers"]
        assert upstream["x-user-id"] == SHOP
        assert upstream["x-cert-serial"] == format(pki.web[0].serial_number, "x")
        # Forged certificate headers from the client change nothing: the edge
        # replaces x-forwarded-client-cert and drops client-cert before any filter.
        stolen = ":" + pki.other[0].public_bytes(serialization.Encoding.DER).hex() + ":"
        status, _headers, body = http_get(url, {"x-forwarded-client-cert": _stolen_element(pki),
                                                "client-cert": stolen}, context=pki.client(pki.web))
        assert status == 200, body
        assert json.loads(body)["headers"]["x-user-id"] == SHOP
        # A certificate Envoy accepted (its CA is in the edge's bundle) that the
        # policy's CA did not issue: authz refuses it.
        status, headers, body = http_get(url, context=pki.client(pki.stranger))
        assert status == 401, body
        assert json.loads(body)["reason"] == "untrusted_certificate"
        assert 'error_description="untrusted_certificate"' in headers["www-authenticate"]
        # Another workload of the same CA: verified, but no role grants it the path.
        status, _headers, body = http_get(url, context=pki.client(pki.other))
        assert status == 403, body


def _hop(pki: Pki, edge_port: int, mode: str) -> tuple[Path, int]:
    """A first Envoy terminating the client's mTLS (clients' CA only) and
    writing its element to x-forwarded-client-cert (``mode``), in front of the edge."""
    chain, key = pki.edge
    port, admin = free_port(), free_port()
    tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": str(chain)},
                                  "private_key": {"filename": str(key)}}],
            "validation_context": {"trusted_ca": {"filename": str(pki.both)}}}}}
    manager = {
        "@type": ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                  "HttpConnectionManager"),
        "stat_prefix": "hop", "codec_type": "AUTO", "forward_client_cert_details": mode,
        "set_current_client_cert_details": {"cert": True, "uri": True},
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "edge"}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "hop", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                           "filter_chains": [{"transport_socket": tls, "filters": [{
                               "name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}]}],
            "clusters": [{"name": "edge", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
                "cluster_name": "edge", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": edge_port}}}}]}]}}]}}
    path = pki.tmp / f"hop-{mode}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port


@pytest.mark.parametrize("mode", ["SANITIZE_SET", "APPEND_FORWARD"])
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_behind_an_xfcc_hop_only_the_hop_s_element_is_read(
        served: tuple[Authz, Pki, str], protocol: str, mode: str) -> None:
    pki = served[1]
    with Echo() as echo, Envoy(pki.tmp, _options(served, echo, protocol, xfcc_from_hop=True)) as edge:
        config, port = _hop(pki, edge.listen_port, mode)
        hop = Proc(["envoy", "-c", str(config), "--disable-hot-restart", "--concurrency", "1", "-l", "info"],
                   name="xfcc-hop")
        try:
            hop.wait_for("starting main dispatch loop")
            wait_listening(port, hop)
            url = f"https://127.0.0.1:{port}/api/orders/1"
            status, _headers, body = http_get(url, context=pki.client(pki.web))
            assert status == 200, body
            assert json.loads(body)["headers"]["x-user-id"] == SHOP
            # A client's own element, with a real certificate of another workload:
            # dropped (SANITIZE_SET) or kept before the hop's (APPEND_FORWARD), never read.
            status, _headers, body = http_get(url, {"x-forwarded-client-cert": _stolen_element(pki)},
                                              context=pki.client(pki.web))
            assert status == 200, body
            assert json.loads(body)["headers"]["x-user-id"] == SHOP
            status, _headers, body = http_get(url, context=pki.client(pki.stranger))
            assert status == 401, body
            assert json.loads(body)["reason"] == "untrusted_certificate"
        finally:
            hop.stop()
