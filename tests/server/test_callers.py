"""Callers bound to what they may ask (docs/security.md 60), through a real
gRPC server: the worker's credentials (TLS files, client CA, reloaded when
they change) and the Check servicer, with real certificates from a test CA
and real gRPC clients. Through real Envoy: tests/integration/test_callers.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from authz.config import load_policy
from authz.engine import SystemClock
from authz.server.caller_identity import TlsFiles, readers
from authz.server.service import CheckService, PolicyState
from authz.server.telemetry import Telemetry
from authz.wire.grpc import AUTHORIZATION_SERVICE, CheckRequest, CheckResponse
from testkit.pki import MeshCA
from testkit.requests import check_request_json
from testkit.spiffe import AUTHZ, BILLING, CALLERS, GATEWAY, ORDERS

POLICY = f"""\
version: 1
{CALLERS}rules:
  - {{name: public, effect: allow, paths: ["/api/**"], anonymous: true}}
response:
  headers: {{x-asked-path: request.path}}
"""


def _check(destination: str = ORDERS, path: str = "/api/orders") -> bytes:
    body = check_request_json("GET", path)
    body["attributes"]["destination"]["principal"] = destination
    return bytes(json_format.ParseDict(body, CheckRequest()).SerializeToString())


def _outcome(raw: bytes) -> tuple[int, str, dict[str, str]]:
    response = CheckResponse.FromString(raw)
    if response.HasField("ok_response"):
        return 200, "allowed", {h.header.key: h.header.value for h in response.ok_response.headers}
    return response.denied_response.status.code, json.loads(response.denied_response.body)["reason"], {}


class Server:
    """A CheckService on a real gRPC server, as a worker runs it."""

    def __init__(self, policy: Path, port_credentials: Any, *, trust_caller_xfcc: bool = False,
                 more_ports: tuple[Any, ...] = ()) -> None:
        self.telemetry = Telemetry()
        state = PolicyState(load_policy(str(policy)), SystemClock())
        caller_of = readers(client_ca=not trust_caller_xfcc, trust_caller_xfcc=trust_caller_xfcc, http_door=False)
        self.service = CheckService(state, self.telemetry, caller_of=caller_of)
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(AUTHORIZATION_SERVICE, {
            "Check": grpc.unary_unary_rpc_method_handler(self.service.check_sync)})])
        if port_credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", port_credentials)
        self.more_ports = [self.server.add_secure_port("127.0.0.1:0", more) for more in more_ports]
        self.server.start()

    def stop(self) -> None:
        self.server.stop(None)


class Pki:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ca = MeshCA(tmp)
        chain, key = self.ca.workload(AUTHZ, "authz")
        # The files authz serves with: rotated in place by the reload test.
        self.cert, self.key, self.client_ca = tmp / "tls.crt", tmp / "tls.key", tmp / "client-ca.pem"
        shutil.copy(chain, self.cert)
        shutil.copy(key, self.key)
        shutil.copy(self.ca.cert_path, self.client_ca)

    def channel(self, port: int, spiffe_id: str | None, *, ca: MeshCA | None = None,
                trusted: Path | None = None) -> grpc.Channel:
        root = (trusted or self.ca.cert_path).read_bytes()
        if spiffe_id is None:
            credentials = grpc.ssl_channel_credentials(root)
        else:
            chain, key = (ca or self.ca).workload(spiffe_id, spiffe_id.rsplit("/", 1)[-1] + "-client")
            credentials = grpc.ssl_channel_credentials(root, key.read_bytes(), chain.read_bytes())
        return grpc.secure_channel(f"localhost:{port}", credentials)


def _ask(channel: grpc.Channel) -> Callable[..., tuple[int, str, dict[str, str]]]:
    method = channel.unary_unary(f"/{AUTHORIZATION_SERVICE}/Check")

    def ask(destination: str = ORDERS, path: str = "/api/orders",
            metadata: Any = None) -> tuple[int, str, dict[str, str]]:
        return _outcome(method(_check(destination, path), timeout=10, metadata=metadata))

    return ask


@pytest.fixture
def mtls(tmp_path: Path) -> Iterator[tuple[Server, Pki, TlsFiles]]:
    pki = Pki(tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    files = TlsFiles(str(pki.cert), str(pki.key), str(pki.client_ca))
    server = Server(policy, files.credentials())
    yield server, pki, files
    server.stop()


def test_an_admitted_caller_is_answered_and_others_never_get_the_cached_allow(
        mtls: tuple[Server, Pki, TlsFiles]) -> None:
    server, pki, _files = mtls
    gateway = _ask(pki.channel(server.port, GATEWAY))
    assert gateway() == (200, "allowed", {"x-asked-path": "/api/orders"})
    assert gateway() == (200, "allowed", {"x-asked-path": "/api/orders"})  # now from the decision cache
    assert server.service.state.decisions.stats.hits >= 1
    # Another workload asking about its peer, for the very request whose allow is cached.
    billing = _ask(pki.channel(server.port, BILLING))
    assert billing(ORDERS) == (403, "untrusted_caller", {})
    assert billing(ORDERS) == (403, "untrusted_caller", {})
    # A sidecar asking about itself is admitted (destinations: self).
    assert billing(BILLING) == (200, "allowed", {"x-asked-path": "/api/orders"})
    assert sum(n for labels, n in server.telemetry.decisions.items() if labels[:2] == ("untrusted_caller", "none")) == 2


def test_a_caller_without_a_certificate_gets_no_answer(mtls: tuple[Server, Pki, TlsFiles]) -> None:
    server, pki, _files = mtls
    with pytest.raises(grpc.RpcError) as refused:
        _ask(pki.channel(server.port, None))()
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    stranger_ca = MeshCA(pki.tmp, "stranger-ca")
    with pytest.raises(grpc.RpcError) as refused:
        _ask(pki.channel(server.port, GATEWAY, ca=stranger_ca))()  # the right name from a CA authz does not trust
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert sum(server.telemetry.decisions.values()) == 0


def test_rotated_files_serve_new_handshakes_without_dropping_open_connections(
        mtls: tuple[Server, Pki, TlsFiles]) -> None:
    server, pki, _files = mtls
    before = _ask(pki.channel(server.port, GATEWAY))
    assert before()[0] == 200
    # cert-manager / Istio rotate: a new CA, authz's new certificate and the new client CA.
    rotated = MeshCA(pki.tmp, "rotated-ca")
    chain, key = rotated.workload(AUTHZ, "authz-rotated")
    shutil.copy(rotated.cert_path, pki.client_ca)
    shutil.copy(key, pki.key)
    shutil.copy(chain, pki.cert)
    after = _ask(pki.channel(server.port, GATEWAY, ca=rotated, trusted=rotated.cert_path))
    assert after() == (200, "allowed", {"x-asked-path": "/api/orders"})
    assert before()[0] == 200  # the connection opened before the rotation still answers
    with pytest.raises(grpc.RpcError):  # a new handshake with the old CA's certificate is refused
        _ask(pki.channel(server.port, GATEWAY))()


def test_a_half_written_rotation_keeps_the_old_files(mtls: tuple[Server, Pki, TlsFiles]) -> None:
    server, pki, _files = mtls
    rotated = MeshCA(pki.tmp, "half-ca")
    chain, _key = rotated.workload(AUTHZ, "authz-half")
    shutil.copy(chain, pki.cert)  # the key is not written yet: the pair does not match
    assert _ask(pki.channel(server.port, GATEWAY))()[0] == 200


@pytest.fixture
def behind_sidecar(tmp_path: Path) -> Iterator[Server]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    server = Server(policy, None, trust_caller_xfcc=True)
    yield server
    server.stop()


def test_trust_caller_xfcc_reads_the_element_authz_s_sidecar_appended(behind_sidecar: Server) -> None:
    server = behind_sidecar
    ask = _ask(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    appended = f'By={AUTHZ};Hash=abc;URI={GATEWAY}'
    assert ask(metadata=[("x-forwarded-client-cert", appended)])[0] == 200
    # A forged element before the sidecar's own is never read.
    forged = f'By={AUTHZ};URI={GATEWAY},By={AUTHZ};Hash=def;URI={BILLING}'
    assert ask(metadata=[("x-forwarded-client-cert", forged)])[:2] == (403, "untrusted_caller")
    assert ask(BILLING, metadata=[("x-forwarded-client-cert", forged)])[0] == 200
    # No element, or two headers (not what one sidecar writes): no caller, refused.
    assert ask()[:2] == (403, "untrusted_caller")
    assert ask(metadata=[("x-forwarded-client-cert", appended), ("x-forwarded-client-cert", appended)])[:2] == (
        403, "untrusted_caller")
    # An element with two URIs names no one.
    assert ask(metadata=[("x-forwarded-client-cert", f"By={AUTHZ};URI={GATEWAY};URI={BILLING}")])[:2] == (
        403, "untrusted_caller")


def test_every_port_of_a_worker_learns_of_a_rotation(tmp_path: Path) -> None:
    # A worker listens on the shared port and its own (--worker-ports), each
    # with credentials from the same files: both must serve the new ones.
    pki = Pki(tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    files = TlsFiles(str(pki.cert), str(pki.key), str(pki.client_ca))
    server = Server(policy, files.credentials(), more_ports=(files.credentials(),))
    try:
        rotated = MeshCA(pki.tmp, "rotated-ca")
        chain, key = rotated.workload(AUTHZ, "authz-rotated")
        shutil.copy(rotated.cert_path, pki.client_ca)
        shutil.copy(key, pki.key)
        shutil.copy(chain, pki.cert)
        for port in (server.port, *server.more_ports):
            ask = _ask(pki.channel(port, GATEWAY, ca=rotated, trusted=rotated.cert_path))
            assert ask()[0] == 200
    finally:
        server.stop()
