"""`authz envoy-config` for clients' certificates (authz.tools.envoy_tls): the
edge that terminates their mTLS and the edge behind an XFCC hop, written by
the command itself and accepted by `envoy --mode validate`; the flags that
do not go together are refused. The configs carry clients' certificates
through real Envoy in tests/integration/test_client_certs.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from testkit.pki import MeshCA
from testkit.procs import envoy_validate


def _envoy_config(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "authz", "envoy-config", "--authz", "127.0.0.1:9191", *flags],
                          capture_output=True, text=True, timeout=60)


def _find(node: object, key: str) -> list[object]:
    found = []
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key:
                found.append(value)
            found += _find(value, key)
    elif isinstance(node, list):
        for value in node:
            found += _find(value, key)
    return found


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_an_edge_terminating_client_mtls_passes_the_certificate_on(tmp_path: Path, protocol: str) -> None:
    ca = MeshCA(tmp_path)
    chain, key = ca.workload("spiffe://cluster.local/ns/edge/sa/gateway", "edge")
    run = _envoy_config("--shape", "edge", "--protocol", protocol, "--downstream-tls-cert", str(chain),
                        "--downstream-tls-key", str(key), "--downstream-client-ca", str(ca.cert_path))
    assert run.returncode == 0, run.stderr
    assert "--downstream-client-ca" in run.stdout.splitlines()[0]  # the header says how it was made
    document = yaml.safe_load(run.stdout)
    assert _find(document, "requireClientCertificate") == [True]
    assert _find(document, "forwardClientCertDetails") == ["SANITIZE_SET"]
    assert _find(document, "setCurrentClientCertDetails") == [{"cert": True, "chain": True, "uri": True}]
    assert _find(document, "mutations") == [[{"remove": "client-cert"}, {"remove": "client-cert-chain"}]]
    # Envoy's HTTP ext_authz client cannot send source.certificate: the gRPC door only.
    assert _find(document, "includePeerCertificate") == ([True] if protocol == "grpc" else [])
    config = tmp_path / f"edge-{protocol}.yaml"
    config.write_text(run.stdout)
    envoy_validate(config)


def test_an_edge_behind_an_xfcc_hop_forwards_the_header_as_it_came(tmp_path: Path) -> None:
    run = _envoy_config("--shape", "edge", "--xfcc-from-hop")
    assert run.returncode == 0, run.stderr
    document = yaml.safe_load(run.stdout)
    assert _find(document, "forwardClientCertDetails") == ["ALWAYS_FORWARD_ONLY"]
    assert _find(document, "transportSocket") == []  # no TLS of its own: the hop terminates it
    config = tmp_path / "edge-hop.yaml"
    config.write_text(run.stdout)
    envoy_validate(config)
    # Without either flag the edge keeps Envoy's default, SANITIZE: a client's header is dropped.
    assert _find(yaml.safe_load(_envoy_config("--shape", "edge").stdout), "forwardClientCertDetails") == []


@pytest.mark.parametrize(("flags", "said"), [
    (["--shape", "edge", "--downstream-tls-cert", "c.pem"], "go together"),
    (["--shape", "edge", "--downstream-client-ca", "ca.pem"], "go together"),
    (["--shape", "edge", "--downstream-tls-cert", "c.pem", "--downstream-tls-key", "k.pem", "--xfcc-from-hop"],
     "not with --downstream-tls-cert"),
    (["--shape", "sidecar", "--xfcc-from-hop"], "apply to --shape edge"),
])
def test_downstream_flags_that_do_not_go_together_are_refused(flags: list[str], said: str) -> None:
    run = _envoy_config(*flags)
    assert run.returncode == 2 and said in run.stderr, run.stderr
