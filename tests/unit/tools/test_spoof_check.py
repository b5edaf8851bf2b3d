"""authz validate --envoy-config and authz envoy-config --config: the
header lists read from the policy, and FILE:LINE warnings for a config that
lets a client's copy of an owned header through (docs/security.md entry 56)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from authz.config import load_policy
from authz.tools.envoy_config import EnvoyOptions, render
from authz.tools.mesh_config import emissary, istio
from authz.tools.policy_headers import PolicyHeaders
from authz.tools.spoof_check import spoofable
from testkit.paths import REPO
from tests.deploy.manifests import crd_errors, mesh_config_errors

EXAMPLE = REPO / "examples" / "policy.yaml"


def headers() -> PolicyHeaders:
    return PolicyHeaders.of(load_policy(str(EXAMPLE)))


def test_the_lists_come_from_the_policy() -> None:
    found = headers()
    assert found.upstream == ("x-user-id", "x-user-roles", "x-identity-token")
    assert {"x-user-roles", "x_user_roles", "authorization", "x-api-key", "sub", "tier", "reason"} <= set(found.owned)
    assert found.request is not None and "authorization" in found.request and "x-tenant" in found.request


def test_without_config_envoy_config_says_its_lists_are_defaults() -> None:
    run = subprocess.run([sys.executable, "-m", "authz", "envoy-config", "--shape", "edge", "--authz", "a:1"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 0 and "defaults" in run.stderr and "--config POLICY" in run.stderr
    run = subprocess.run([sys.executable, "-m", "authz", "envoy-config", "--shape", "edge", "--authz", "a:1",
                          "--config", str(EXAMPLE)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 0 and run.stderr == ""


def test_the_istio_and_emissary_output_fits_their_schemas() -> None:
    for protocol in ("grpc", "http"):
        options = EnvoyOptions(shape="edge", authz=["authz.authz.svc.cluster.local:9292"], protocol=protocol)
        assert mesh_config_errors(istio(options, headers())) == []
        assert crd_errors(emissary(options, headers())) == []
    http = istio(EnvoyOptions(shape="edge", authz=["authz:9292"], protocol="http"), headers())
    assert "x-user-roles" in http["extensionProviders"][0]["envoyExtAuthzHttp"]["headersToUpstreamOnAllow"]


def test_a_generated_config_draws_no_warning_and_an_old_one_does(tmp_path: Path) -> None:
    for protocol in ("grpc", "http"):
        options = EnvoyOptions(shape="edge", authz=["a:1"], protocol=protocol, upstream_headers=headers().upstream,
                               owned_headers=headers().owned)
        assert spoofable("envoy.yaml", render(options), headers()) == []
    old = render(EnvoyOptions(shape="edge", authz=["a:1"], protocol="http", owned_headers=[]))
    warnings = spoofable("envoy.yaml", old, headers())
    lines = old.splitlines()
    listed = [w for w in warnings if "allowed_upstream_headers" in w]
    assert len(listed) == 1 and "'x-user-roles'" in listed[0]
    line = int(listed[0].split(":")[1])
    assert "authorizationResponse" in lines[line - 1]
    stripped = [w for w in warnings if "request_headers_to_remove" in w]
    assert {w.split("'")[1] for w in stripped} == set(headers().owned)
    assert all("disabled: true" in lines[int(w.split(":")[1]) - 1] for w in stripped)


def test_istio_and_emissary_configs_are_read_with_their_lines() -> None:
    mesh = {"extensionProviders": [{"name": "authz-http", "envoyExtAuthzHttp": {
        "service": "authz", "port": 9292, "headersToUpstreamOnAllow": ["x-user-*"]}}]}
    configmap = yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio"},
                                "data": {"mesh": yaml.safe_dump(mesh)}}, default_style=None)
    text = "# comment\n---\n" + configmap
    warnings = spoofable("mesh.yaml", text, headers())
    assert [w.split("'")[1] for w in warnings] == ["x-identity-token"]  # x-user-* covers the other two
    service = {"apiVersion": "getambassador.io/v3alpha1", "kind": "AuthService",
               "spec": {"auth_service": "authz:9292", "proto": "http",
                        "allowed_authorization_headers": ["x-user-id", "x-identity-token"]}}
    text = yaml.safe_dump(service, sort_keys=False)
    warnings = spoofable("auth.yaml", text, headers())
    assert len(warnings) == 1 and "'x-user-roles'" in warnings[0]
    assert "allowed_authorization_headers" in text.splitlines()[int(warnings[0].split(":")[1]) - 1]
    grpc = {**service, "spec": {"auth_service": "authz:9191", "proto": "grpc"}}
    assert spoofable("auth.yaml", yaml.safe_dump(grpc), headers()) == []
    public = {"apiVersion": "getambassador.io/v3alpha1", "kind": "Mapping",
              "spec": {"prefix": "/public/", "service": "web", "bypass_auth": True,
                       "remove_request_headers": list(headers().owned[1:])}}
    text = yaml.safe_dump(public, sort_keys=False)
    warnings = spoofable("mappings.yaml", text, headers())
    assert len(warnings) == 1 and f"'{headers().owned[0]}'" in warnings[0]
    assert "bypass_auth" in text.splitlines()[int(warnings[0].split(":")[1]) - 1]


SHIPPED_PROXY_CONFIGS = [
    "deploy/istio/mesh/istio-operator.yaml", "deploy/istio/mesh/istiod-values.yaml",
    "deploy/istio/mesh/mesh-configmap.yaml", "deploy/edge-stack/authservice-http/authservice.yaml",
    "deploy/edge-stack/authservice/authservice.yaml", "deploy/edge-stack/authservice/mappings.yaml",
    *(f"deploy/envoy/{path.name}" for path in sorted((REPO / "deploy" / "envoy").glob("*.yaml"))),
]


def test_the_shipped_proxy_configs_let_no_owned_header_through(tmp_path: Path) -> None:
    """The deployed policy (deploy/kubernetes) against the shipped mesh and
    gateway configs, and the example policy against the shipped bootstraps
    (generated from it)."""
    from tests.deploy.test_policy_configmap import Cluster

    deployed = PolicyHeaders.of(load_policy(str(Cluster(tmp_path).config)))
    for name in SHIPPED_PROXY_CONFIGS:
        policy = headers() if name.startswith("deploy/envoy/") else deployed
        assert spoofable(name, (REPO / name).read_text(), policy) == [], name


def test_the_hand_written_fixture_leaves_nothing_spoofable_and_a_gap_is_found(tmp_path: Path) -> None:
    """tests/fixtures/envoy/hand-written-http.yaml, which the integration
    tests run, against the policy they use; then with one gap each."""
    from tests.integration.test_spoofed_headers import HAND_WRITTEN, _policy

    owned = PolicyHeaders.of(load_policy(str(_policy(tmp_path))))
    text = HAND_WRITTEN.read_text()
    assert spoofable("hand.yaml", text, owned) == []
    narrower = text.replace("{prefix: x-user-}, ", "{exact: x-user-id}, ")
    warnings = spoofable("hand.yaml", narrower, owned)
    assert len(warnings) == 1 and "'x-user-roles'" in warnings[0] and "allowed_upstream_headers" in warnings[0]
    leaky = text.replace(" tier]", "]")
    warnings = spoofable("hand.yaml", leaky, owned)
    assert len(warnings) == 1 and "'tier'" in warnings[0]
    assert "disabled" in text.splitlines()[int(warnings[0].split(":")[1]) - 1]


def test_the_cli_writes_istio_and_emissary_yaml_that_fits_the_schemas() -> None:
    for kind in ("istio", "emissary"):
        for protocol in ("grpc", "http"):
            run = subprocess.run([sys.executable, "-m", "authz", "envoy-config", "--format", kind, "--protocol",
                                  protocol,
                                  "--authz", "authz.authz.svc.cluster.local:9292", "--timeout", "0.5",
                                  "--config", str(EXAMPLE)], capture_output=True, text=True, timeout=60, cwd=REPO)
            assert run.returncode == 0 and run.stderr == "", run.stderr
            document = yaml.safe_load(run.stdout)
            assert (mesh_config_errors(document) if kind == "istio" else crd_errors(document)) == [], run.stdout
            assert spoofable("generated.yaml", run.stdout, headers()) == []
    run = subprocess.run([sys.executable, "-m", "authz", "envoy-config", "--format", "istio", "--authz", "a:1,b:2"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 2 and "one --authz" in run.stderr
