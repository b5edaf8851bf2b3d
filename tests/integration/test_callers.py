"""Callers bound to what they may ask (docs/security.md 60), through real
Envoys with real certificates from a test CA.

- mTLS to authz (``serve --grpc-tls-cert/--grpc-tls-key/--grpc-client-ca``):
  the Envoy configs ``authz envoy-config --authz-tls-cert ...`` writes present
  a workload's certificate; authz's caller is its URI SAN.
- authz behind its own sidecar (``serve --trust-caller-xfcc``): a real Envoy
  terminates the callers' mTLS in front of authz and appends an
  ``x-forwarded-client-cert`` element (``APPEND_FORWARD``, as Istio does, or
  ``SANITIZE_SET``); the gateway calls through it on both doors.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import json_format

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authz.tools.envoy_config import EnvoyOptions
from testkit.paths import EXAMPLES
from testkit.pki import MeshCA
from testkit.procs import Authz, Echo, Envoy, Proc, free_port, http_get, wait_listening
from testkit.requests import check_request_json
from testkit.spiffe import AUTHZ, BILLING, CALLERS, GATEWAY, ORDERS

POLICY = f"""\
version: 1
{CALLERS}peers:
  "{BILLING}": [orders-reader]
roles:
  orders-reader:
    - {{methods: [GET], paths: ["/api/orders/**"]}}
rules:
  - {{name: public, effect: allow, paths: ["/public/**"], anonymous: true}}
response:
  headers: {{x-user-id: identity.subject}}
  identity_token: {{header: x-identity-token, issuer: https://authz.internal, audience: internal, ttl: 60s,
                    signing_key: identity-es256.pem}}
"""


class Pki:
    def __init__(self, tmp: Path) -> None:
        self.ca = MeshCA(tmp)
        self.files = {name: self.ca.workload(spiffe, name) for name, spiffe in (
            ("authz", AUTHZ), ("gateway", GATEWAY), ("orders", ORDERS), ("billing", BILLING))}

    def client(self, name: str) -> ssl.SSLContext:
        chain, key = self.files[name]
        context = ssl.create_default_context(cafile=str(self.ca.cert_path))
        context.load_cert_chain(str(chain), str(key))
        return context

    def envoy(self, shape: str, authz: str, echo: Echo, *, caller: str | None, workload: str = "orders",
              protocol: str = "grpc") -> EnvoyOptions:
        """An Envoy of ``shape`` calling authz at ``authz``, presenting the
        certificate of ``caller`` (None: none)."""
        chain, key = self.files[workload]
        options = EnvoyOptions(shape=shape, authz=[authz], protocol=protocol, cert_chain=str(chain),
                               private_key=str(key), ca_cert=str(self.ca.cert_path), upstream=echo.address,
                               protected_prefixes=["/api/", "/public/"])
        if caller is not None:
            options.authz_tls_cert, options.authz_tls_key = map(str, self.files[caller])
            options.authz_ca, options.authz_san = str(self.ca.cert_path), AUTHZ
        return options

    def grpc_channel(self, port: int, name: str) -> grpc.Channel:
        chain, key = self.files[name]
        credentials = grpc.ssl_channel_credentials(self.ca.cert_path.read_bytes(), key.read_bytes(), chain.read_bytes())
        return grpc.secure_channel(f"localhost:{port}", credentials)


def _policy(tmp: Path) -> Path:
    shutil.copy(EXAMPLES / "keys" / "identity-es256.pem", tmp / "identity-es256.pem")
    path = tmp / "policy.yaml"
    path.write_text(POLICY)
    return path


def _check(stub: Any, destination: str, metadata: Any = None) -> tuple[int, str]:
    body = check_request_json("GET", "/api/orders/1", principal=BILLING)
    body["attributes"]["destination"]["principal"] = destination
    response = stub.Check(json_format.ParseDict(body, external_auth_pb2.CheckRequest()), timeout=10, metadata=metadata)
    if response.HasField("ok_response"):
        return 200, "allowed"
    return response.denied_response.status.code, json.loads(response.denied_response.body)["reason"]


# -- mTLS to authz's gRPC door ------------------------------------------------------


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Authz, Pki, Path]]:
    tmp = tmp_path_factory.mktemp("callers-mtls")
    pki = Pki(tmp)
    chain, key = pki.files["authz"]
    with Authz(_policy(tmp), workers=1, extra=["--grpc-tls-cert", str(chain), "--grpc-tls-key", str(key),
                                                "--grpc-client-ca", str(pki.ca.cert_path)]) as authz:
        yield authz, pki, tmp


def test_an_admitted_sidecar_gets_its_identity_token(mtls: tuple[Authz, Pki, Path]) -> None:
    authz, pki, tmp = mtls
    with Echo() as echo, Envoy(tmp, pki.envoy("sidecar", authz.grpc_address, echo, caller="orders")) as envoy:
        envoy.url = envoy.url.replace("http://", "https://")
        options = envoy.url + "/api/orders/1"
        status, _headers, body = http_get(options, context=pki.client("billing"))
        assert status == 200, body
        seen = json.loads(body)["headers"]
        assert seen["x-user-id"] == BILLING
        assert seen["x-identity-token"].count(".") == 2


def test_a_workload_asking_about_a_peer_gets_untrusted_caller(mtls: tuple[Authz, Pki, Path]) -> None:
    authz, pki, tmp = mtls
    # A sidecar serving orders' certificate, calling authz with billing's: billing asks about orders.
    with Echo() as echo, Envoy(tmp, pki.envoy("sidecar", authz.grpc_address, echo, caller="billing")) as envoy:
        envoy.url = envoy.url.replace("http://", "https://")
        status, headers, body = http_get(envoy.url + "/api/orders/1", context=pki.client("billing"))
        assert status == 403, body
        assert json.loads(body)["reason"] == "untrusted_caller"
        assert "x-identity-token" not in headers
    # The same, sent straight to authz with billing's own certificate, naming any source it likes.
    stub = external_auth_pb2_grpc.AuthorizationStub(pki.grpc_channel(authz.grpc_port, "billing"))
    assert _check(stub, ORDERS) == (403, "untrusted_caller")
    assert _check(stub, BILLING) == (200, "allowed")  # about itself it may ask
    _status, _headers, metrics = authz.get("/metrics")
    assert 'authz_decisions_total{door="grpc",issuer="none",reason="untrusted_caller"}' in metrics.decode()


def test_the_gateway_may_ask_about_any_request(mtls: tuple[Authz, Pki, Path]) -> None:
    authz, pki, tmp = mtls
    with Echo() as echo, Envoy(tmp, pki.envoy("edge", authz.grpc_address, echo, caller="gateway")) as envoy:
        status, _headers, body = http_get(envoy.url + "/public/hello")
        assert status == 200, body
        status, _headers, body = http_get(envoy.url + "/api/orders/1")
        assert status == 401, body  # decided by the policy: anonymous
        assert json.loads(body)["reason"] == "missing_credential"


def test_a_caller_without_a_certificate_gets_no_answer(mtls: tuple[Authz, Pki, Path]) -> None:
    authz, pki, tmp = mtls
    with Echo() as echo, Envoy(tmp, pki.envoy("edge", authz.grpc_address, echo, caller=None)) as envoy:
        status, _headers, body = http_get(envoy.url + "/public/hello")
        assert status == 403 and body == b""  # Envoy's own error answer: authz never answered
    with pytest.raises(grpc.RpcError) as refused:  # the TLS handshake is refused
        _check(external_auth_pb2_grpc.AuthorizationStub(grpc.secure_channel(
            f"localhost:{authz.grpc_port}", grpc.ssl_channel_credentials(pki.ca.cert_path.read_bytes()))), ORDERS)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


# -- authz behind its own sidecar: --trust-caller-xfcc ------------------------------------


def authz_sidecar(tmp: Path, pki: Pki, authz: Authz, http_door: str, mode: str) -> tuple[dict[str, Any], int, int]:
    """An Envoy in front of authz as Istio's sidecar is: mTLS from callers
    (STRICT), ``forward_client_cert_details: mode``; one listener for each door."""
    chain, key = pki.files["authz"]
    tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": str(chain)},
                                  "private_key": {"filename": str(key)}}],
            "validation_context": {"trusted_ca": {"filename": str(pki.ca.cert_path)}},
            "alpn_protocols": ["h2", "http/1.1"]}}}
    ports = {"grpc": free_port(), "http": free_port()}

    def listener(door: str) -> dict[str, Any]:
        return {"name": door, "address": {"socket_address": {"address": "127.0.0.1", "port_value": ports[door]}},
                "filter_chains": [{"transport_socket": tls, "filters": [{
                    "name": "envoy.filters.network.http_connection_manager", "typed_config": {
                        "@type": ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                                  "HttpConnectionManager"),
                        "stat_prefix": door, "codec_type": "AUTO",
                        "forward_client_cert_details": mode,
                        "set_current_client_cert_details": {"uri": True},
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                            {"match": {"prefix": "/"}, "route": {"cluster": f"authz_{door}"}}]}]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}

    def cluster(door: str, address: str) -> dict[str, Any]:
        host, _, port = address.rpartition(":")
        found: dict[str, Any] = {
            "name": f"authz_{door}", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": f"authz_{door}", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": host, "port_value": int(port)}}}}]}]}}
        if door == "grpc":
            found["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
        return found

    admin = free_port()
    config = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
              "static_resources": {"listeners": [listener("grpc"), listener("http")],
                                   "clusters": [cluster("grpc", authz.grpc_address), cluster("http", http_door)]}}
    return config, ports["grpc"], ports["http"]


@pytest.fixture(scope="module", params=["APPEND_FORWARD", "SANITIZE_SET"])
def behind_sidecar(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Authz, Pki, Path, int, int]]:
    tmp = tmp_path_factory.mktemp("callers-xfcc")
    pki = Pki(tmp)
    http_door = f"127.0.0.1:{free_port()}"
    with Authz(_policy(tmp), workers=1, extra=["--trust-caller-xfcc", "--http-authz-address", http_door,
                                                "--http-authz-prefix", "/authz"]) as authz:
        config, grpc_port, http_port = authz_sidecar(tmp, pki, authz, http_door, request.param)
        path = tmp / "authz-sidecar.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = Proc(["envoy", "-c", str(path), "--disable-hot-restart", "--concurrency", "1", "-l", "info"],
                    name="authz-sidecar")
        try:
            proc.wait_for("starting main dispatch loop")
            wait_listening(grpc_port, proc)
            wait_listening(http_port, proc)
            yield authz, pki, tmp, grpc_port, http_port
        finally:
            proc.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_through_authz_s_sidecar_the_gateway_is_admitted_on_both_doors(
        behind_sidecar: tuple[Authz, Pki, Path, int, int], protocol: str) -> None:
    _authz, pki, tmp, grpc_port, http_port = behind_sidecar
    port = grpc_port if protocol == "grpc" else http_port
    with Echo() as echo, Envoy(tmp,
                               pki.envoy("edge", f"127.0.0.1:{port}", echo, caller="gateway",
                                         protocol=protocol)) as envoy:
        status, _headers, body = http_get(envoy.url + "/public/hello", {"x-forwarded-client-cert": f"URI={ORDERS}"})
        assert status == 200, body
    # A workload presenting its own certificate, on the HTTP door, is not the gateway.
    with Echo() as echo, Envoy(tmp,
                               pki.envoy("edge", f"127.0.0.1:{port}", echo, caller="billing",
                                         protocol=protocol)) as envoy:
        status, _headers, body = http_get(envoy.url + "/public/hello")
        assert status == 403, body
        assert json.loads(body)["reason"] == "untrusted_caller"


def test_through_authz_s_sidecar_a_sidecar_asks_about_itself_only(
        behind_sidecar: tuple[Authz, Pki, Path, int, int]) -> None:
    _authz, pki, tmp, grpc_port, _http_port = behind_sidecar
    address = f"127.0.0.1:{grpc_port}"
    with Echo() as echo, Envoy(tmp, pki.envoy("sidecar", address, echo, caller="orders")) as envoy:
        envoy.url = envoy.url.replace("http://", "https://")
        status, _headers, body = http_get(envoy.url + "/api/orders/1", context=pki.client("billing"))
        assert status == 200, body
        assert json.loads(body)["headers"]["x-identity-token"].count(".") == 2
    with Echo() as echo, Envoy(tmp, pki.envoy("sidecar", address, echo, caller="billing")) as envoy:
        envoy.url = envoy.url.replace("http://", "https://")
        status, _headers, body = http_get(envoy.url + "/api/orders/1", context=pki.client("billing"))
        assert status == 403, body
        assert json.loads(body)["reason"] == "untrusted_caller"


def test_a_client_forging_xfcc_is_refused(behind_sidecar: tuple[Authz, Pki, Path, int, int]) -> None:
    _authz, pki, _tmp, grpc_port, _http_port = behind_sidecar
    stub = external_auth_pb2_grpc.AuthorizationStub(pki.grpc_channel(grpc_port, "billing"))
    forged = [("x-forwarded-client-cert", f"By={AUTHZ};URI={GATEWAY}")]
    assert _check(stub, ORDERS, forged) == (403, "untrusted_caller")
    assert _check(stub, BILLING, forged) == (200, "allowed")  # billing itself, whatever it wrote


# -- a binding policy and a door without caller identity refuse to start together ---------------


def _serve(policy: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "authz", "serve", "--config", str(policy), "--workers", "1",
                           "--grpc-address", f"127.0.0.1:{free_port()}", "--http-address", f"127.0.0.1:{free_port()}",
                           *flags], capture_output=True, text=True, timeout=60)


def test_a_binding_policy_and_an_unbound_undeclared_door_refuse_to_start(tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    run = _serve(policy)  # the gRPC door without a client CA or --trust-caller-xfcc
    assert run.returncode == 2
    assert f"{policy}:2: 'callers' binds the grpc door, but authz serves it without a caller identity" in run.stderr
    pki = Pki(tmp_path)
    chain, key = pki.files["authz"]
    tls = ["--grpc-tls-cert", str(chain), "--grpc-tls-key", str(key), "--grpc-client-ca", str(pki.ca.cert_path)]
    run = _serve(policy, *tls, "--http-authz-address", f"127.0.0.1:{free_port()}")
    assert run.returncode == 2
    assert f"{policy}:2: 'callers' binds the http door" in run.stderr
    assert "gateway_only: [http]" in run.stderr
    run = _serve(policy, *tls[:4], "--grpc-client-ca", str(chain), "--trust-caller-xfcc")
    assert run.returncode == 2 and "both name the caller" in run.stderr
    run = _serve(policy, "--grpc-tls-cert", str(chain), "--grpc-tls-key", str(pki.files["billing"][1]),
                 "--grpc-client-ca", str(pki.ca.cert_path))
    assert run.returncode == 2 and "is not the key of the certificate" in run.stderr


def test_a_door_declared_gateway_only_serves_unbound(tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    policy.write_text(POLICY.replace("peers:", "  - gateway_only: [http]\npeers:"))
    pki = Pki(tmp_path)
    chain, key = pki.files["authz"]
    door = f"127.0.0.1:{free_port()}"
    with Authz(policy, workers=1, extra=["--grpc-tls-cert", str(chain), "--grpc-tls-key", str(key),
                                         "--grpc-client-ca", str(pki.ca.cert_path), "--http-authz-address", door,
                                         "--http-authz-prefix", "/authz"]):
        status, _headers, _body = http_get(f"http://{door}/authz/public/hello", {"host": "api.example.com"})
        assert status == 200  # the gateway-only door answers as without callers (fenced by the deployment)


def test_a_reload_that_would_bind_an_unbound_door_is_refused(tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    binding = policy.read_text()
    policy.write_text(binding.split("peers:", 1)[0].split("callers:", 1)[0] + "peers:" + binding.split("peers:", 1)[1])
    with Authz(policy, workers=1) as authz:
        assert _check(authz.stub, ORDERS) == (200, "allowed")  # no callers: anyone may ask
        mark = authz.proc.mark()
        policy.write_text(binding)
        authz.proc.wait_for("policy reload failed", since=mark)
        assert "'callers' binds the grpc door" in authz.proc.output()
        assert _check(authz.stub, ORDERS) == (200, "allowed")  # the last good policy stays


def test_authz_serve_picks_up_rotated_tls_files_on_every_port(tmp_path: Path) -> None:
    # As cert-manager rotates a mounted Secret: new files in place, on the
    # shared port and the worker's own port, with no restart.
    pki = Pki(tmp_path)
    chain, key = pki.files["authz"]
    cert, private, client_ca = tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt"
    shutil.copy(chain, cert)
    shutil.copy(key, private)
    shutil.copy(pki.ca.cert_path, client_ca)
    with Authz(_policy(tmp_path), workers=1, worker_ports=True, extra=[
            "--grpc-tls-cert", str(cert), "--grpc-tls-key", str(private), "--grpc-client-ca", str(client_ca)]) as authz:
        ports = [authz.grpc_port, int(authz.worker_addresses[0].rsplit(":", 1)[1])]
        before = external_auth_pb2_grpc.AuthorizationStub(pki.grpc_channel(ports[1], "gateway"))
        assert _check(before, ORDERS) == (200, "allowed")
        (tmp_path / "rotated").mkdir()
        rotated = Pki(tmp_path / "rotated")  # a new CA: its files beside the old ones
        new_chain, new_key = rotated.files["authz"]
        shutil.copy(rotated.ca.cert_path, client_ca)
        shutil.copy(new_key, private)
        shutil.copy(new_chain, cert)
        for port in ports:
            stub = external_auth_pb2_grpc.AuthorizationStub(rotated.grpc_channel(port, "gateway"))
            assert _check(stub, ORDERS) == (200, "allowed")
            with pytest.raises(grpc.RpcError):  # the old CA's certificate, on a new connection
                _check(external_auth_pb2_grpc.AuthorizationStub(pki.grpc_channel(port, "billing")), BILLING)
        assert _check(before, ORDERS) == (200, "allowed")  # the connection opened before goes on
