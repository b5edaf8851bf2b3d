"""The Envoy config generator (authz.tools.envoy_config): the configs in
deploy/envoy/ are `authz envoy-config` output, and every Envoy config the
project ships or generates passes `envoy --mode validate` (the benchmark's
baselines: tests/test_bench_envoy_configs.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authz.tools.envoy_config import EnvoyOptions, render
from testkit.paths import REPO
from testkit.pki import MeshCA
from testkit.procs import envoy_validate

DEPLOY = REPO / "deploy" / "envoy"
#: Each reads its header lists from the example policy (--config).
POLICY = ["--config", "examples/policy.yaml"]
BOUND = ["--authz-tls-cert", "/etc/authz-client/tls.crt", "--authz-tls-key", "/etc/authz-client/tls.key",
         "--authz-ca", "/etc/authz-client/ca.crt", "--authz-san", "spiffe://cluster.local/ns/authz/sa/authz"]
SHIPPED = {
    "edge.yaml": ["--shape", "edge", "--authz", "127.0.0.1:9191", "--listen", "0.0.0.0:8080", "--upstream",
                  "127.0.0.1:8000"],
    "sidecar.yaml": ["--shape", "sidecar", "--authz", "127.0.0.1:9191", "--listen", "0.0.0.0:15006",
                     "--upstream", "127.0.0.1:8000", "--protect", "/api/"],
    "edge-http.yaml": ["--shape", "edge", "--protocol", "http", "--authz", "127.0.0.1:9292", "--listen", "0.0.0.0:8080",
                       "--upstream", "127.0.0.1:8000"],
    "sidecar-http.yaml": ["--shape", "sidecar", "--protocol", "http", "--authz", "127.0.0.1:9292",
                          "--listen", "0.0.0.0:15006", "--upstream", "127.0.0.1:8000", "--protect", "/api/"],
    "edge-rate-limits.yaml": ["--shape", "edge", "--authz", "127.0.0.1:9191", "--listen", "0.0.0.0:8080",
                              "--upstream", "127.0.0.1:8000", "--access-log", "/dev/stdout", "--metadata-key", "sub",
                              "--metadata-key", "tier", "--rate-limit-by", "tier", "--local-rate-limit",
                              "tier=free:3/1m"],
    # Callers bound (docs/security.md 60): Envoy presents its certificate to authz.
    "edge-bound.yaml": ["--shape", "edge", "--authz", "127.0.0.1:9191", "--listen", "0.0.0.0:8080",
                        "--upstream", "127.0.0.1:8000", *BOUND],
    "sidecar-bound.yaml": ["--shape", "sidecar", "--authz", "127.0.0.1:9191",
                           "--listen", "0.0.0.0:15006", "--upstream", "127.0.0.1:8000", "--protect", "/api/",
                           "--authz-tls-cert", "/etc/certs/cert-chain.pem", "--authz-tls-key", "/etc/certs/key.pem",
                           "--authz-ca", "/etc/certs/root-cert.pem", "--authz-san",
                           "spiffe://cluster.local/ns/authz/sa/authz"],
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_configs_are_the_generator_output(name: str) -> None:
    run = subprocess.run([sys.executable, "-m", "authz", "envoy-config", *SHIPPED[name], *POLICY], capture_output=True,
                         text=True, timeout=60, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert (DEPLOY / name).read_text() == run.stdout, (
        f"deploy/envoy/{name} is stale: regenerate it with authz envoy-config")


@pytest.mark.parametrize("name", ["edge.yaml", "edge-http.yaml", "edge-rate-limits.yaml"])
def test_edge_config_validates(name: str) -> None:
    envoy_validate(DEPLOY / name)


@pytest.mark.parametrize("name", ["sidecar.yaml", "sidecar-http.yaml", "sidecar-bound.yaml", "edge-bound.yaml"])
def test_sidecar_config_validates_with_real_certificates(tmp_path: Path, name: str) -> None:
    ca = MeshCA(tmp_path)
    chain, key = ca.workload("spiffe://cluster.local/ns/shop/sa/orders", "orders")
    text = (DEPLOY / name).read_text()
    text = (text.replace("/etc/certs/cert-chain.pem", str(chain)).replace("/etc/certs/key.pem", str(key))
            .replace("/etc/certs/root-cert.pem", str(ca.cert_path))
            .replace("/etc/authz-client/tls.crt", str(chain)).replace("/etc/authz-client/tls.key", str(key))
            .replace("/etc/authz-client/ca.crt", str(ca.cert_path)))
    config = tmp_path / "sidecar.yaml"
    config.write_text(text)
    envoy_validate(config)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("shape", ["edge", "sidecar"])
def test_generated_variants_validate(tmp_path: Path, shape: str, protocol: str) -> None:
    ca = MeshCA(tmp_path)
    chain, key = ca.workload("spiffe://cluster.local/ns/a/sa/b", "w")
    options = EnvoyOptions(shape=shape, authz=["127.0.0.1:9201", "127.0.0.1:9202"], direct_response=True,
                           protocol=protocol,
                           cert_chain=str(chain), private_key=str(key), ca_cert=str(ca.cert_path),
                           protected_prefixes=["/api/", "/admin/"], timeout=0.25)
    config = tmp_path / f"{shape}-{protocol}.yaml"
    config.write_text(render(options))
    envoy_validate(config)
    # The same, calling authz over TLS with a client certificate (callers bound).
    options.authz_tls_cert, options.authz_tls_key, options.authz_ca = str(chain), str(key), str(ca.cert_path)
    options.authz_san = "spiffe://cluster.local/ns/authz/sa/authz"
    bound = render(options)
    assert "UpstreamTlsContext" in bound and "--authz-tls-cert" in bound.splitlines()[0]
    config.write_text(bound)
    envoy_validate(config)


def test_tls_flags_to_authz_go_together() -> None:
    for flags in (["--authz-tls-cert", "c.pem"], ["--authz-tls-cert", "c.pem", "--authz-tls-key", "k.pem"],
                  ["--authz-san", "spiffe://x/y"]):
        run = subprocess.run([sys.executable, "-m", "authz", "envoy-config", "--shape", "edge", "--authz", "h:1",
                              *flags],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and "go together" in run.stderr, flags


def test_a_typo_in_a_typed_config_fails_at_generation() -> None:
    # envoy-data-plane's classes check field names and types as the config is built.
    from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import ExtAuthz
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="failure_mode_alow"):
        ExtAuthz(failure_mode_alow=False)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="timeout"):
        from envoy_data_plane.envoy.config.core.v3 import GrpcService

        GrpcService(timeout="1s")  # type: ignore[arg-type]


def _document(shape: str, protocol: str, **options: object) -> dict[str, object]:
    import yaml

    text = render(EnvoyOptions(shape=shape, authz=["127.0.0.1:9201", "127.0.0.1:9202"], protocol=protocol,
                               timeout=0.8, **options))  # type: ignore[arg-type]
    return dict(yaml.safe_load(text))


def _authz_parts(document: dict[str, object]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The authz cluster and the ext_authz call (grpc_service or http_service)."""
    clusters = document["staticResources"]["clusters"]  # type: ignore[index]
    (cluster,) = [c for c in clusters if c["name"] == "authz"]
    (ext_authz,) = [f["typedConfig"] for f in _walk(document) if f.get("name") == "envoy.filters.http.ext_authz"]
    service = ext_authz.get("grpcService") or ext_authz["httpService"]
    return cluster, service


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("shape", ["edge", "sidecar"])
def test_the_authz_cluster_routes_around_a_lost_worker(shape: str, protocol: str) -> None:
    """docs/security.md 53: what authz.tools.envoy_resilience puts in every
    generated config (the fault benchmark measured each part)."""
    cluster, service = _authz_parts(_document(shape, protocol))
    retry = service["retryPolicy"]
    on = set(retry["retryOn"].split(","))
    # Only failures where authz never answered; never its answers or overload.
    assert {"connect-failure", "reset", "refused-stream"} <= on
    assert not on & {"5xx", "gateway-error", "resource-exhausted", "retriable-4xx", "retriable-status-codes"}
    assert on - {"connect-failure", "reset", "refused-stream"} == ({"unavailable"} if protocol == "grpc" else set())
    assert retry["numRetries"] == 2
    assert [p["name"] for p in retry["retryHostPredicate"]] == ["envoy.retry_host_predicates.previous_hosts"]
    # Envoy makes max_interval each attempt's timeout: the whole call's timeout.
    assert retry["retryBackOff"]["maxInterval"] == "0.800s"
    assert cluster["connectTimeout"] == "0.200s"
    (thresholds,) = cluster["circuitBreakers"]["thresholds"]
    assert thresholds["maxRetries"] >= thresholds["maxRequests"]
    outlier = cluster["outlierDetection"]
    assert outlier["splitExternalLocalOriginErrors"] is True and outlier["consecutiveLocalOriginFailure"] == 3
    assert outlier["enforcingConsecutive5xx"] == 0  # authz's answers (overload's 503) eject nobody
    assert "enforcingConsecutive5Xx" not in outlier
    if protocol == "grpc":
        (check,) = cluster["healthChecks"]
        assert check["grpcHealthCheck"]["serviceName"] == "envoy.service.auth.v3.Authorization"
    else:
        assert "healthChecks" not in cluster  # one port shared by every worker


def test_the_fault_benchmark_baseline_has_none_of_it() -> None:
    cluster, service = _authz_parts(_document("edge", "grpc", resilience=()))
    assert "retryPolicy" not in service
    assert not {"circuitBreakers", "outlierDetection", "healthChecks"} & set(cluster)
