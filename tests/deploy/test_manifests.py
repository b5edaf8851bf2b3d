"""Every manifest under deploy/ is valid for what it targets, and they agree.

- Built-in kinds: the Kubernetes OpenAPI schemas (kubernetes-validate, strict).
- Istio and Emissary / Edge Stack resources: the ``openAPIV3Schema`` of their
  CRD version (tests/fixtures/crds, sources in its README), plus "no field the
  schema does not declare".
- Istio mesh config (IstioOperator, istiod Helm values, the istio ConfigMap):
  a hand-transcribed schema of the extension provider (README again).
- Composition: kustomizations list existing files and render; names, labels,
  selectors, ports and probes line up; the Istio and Edge Stack resources point
  at the authz Service, and the RequestAuthentication trusts exactly the
  identity token the policy issues.

Each validator also has a test that feeds it a deliberately broken copy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from tests.deploy.manifests import (
    DEPLOY,
    KUBERNETES_VERSIONS,
    KUSTOMIZATION,
    ROOTS,
    Doc,
    all_docs,
    builtin_objects,
    crd_errors,
    custom_resources,
    find,
    istio_operator_errors,
    kubernetes_errors,
    load_docs,
    mesh_config_errors,
    mesh_configs,
    mutated,
    objects,
)

K8S = DEPLOY / "kubernetes"
ISTIO = DEPLOY / "istio"
EDGE = DEPLOY / "edge-stack"
# The two AuthService variants (gRPC and HTTP door): alternatives, one name.
AUTH_GRPC = EDGE / "authservice"
AUTH_HTTP = EDGE / "authservice-http"

# Bases whose files are their resources; the monitoring Component and the
# overlay that adds it are checked by tests/deploy/test_monitoring.py.
KUSTOMIZATION_DIRS = sorted(p.parent for root in ROOTS for p in root.rglob("kustomization.yaml")
                            if p.parent not in (DEPLOY / "monitoring", DEPLOY / "overlays" / "monitoring"))
KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "labels",
    "images",
    "commonAnnotations",
}


def ids(docs: list[Doc]) -> list[str]:
    return [d.id for d in docs]


# -- schemas ---------------------------------------------------------------------


def test_every_document_is_checked_by_some_schema() -> None:
    docs = all_docs()
    assert docs, "no manifests found"
    for doc in docs:
        assert doc.key[0] and doc.key[1], f"{doc.id}: no apiVersion/kind"
    kinds = {d.key for d in custom_resources()}
    assert ("security.istio.io/v1", "AuthorizationPolicy") in kinds
    assert ("getambassador.io/v3alpha1", "AuthService") in kinds
    assert ("getambassador.io/v3alpha1", "Filter") in kinds
    assert ("networking.istio.io/v1", "DestinationRule") in kinds


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("doc", builtin_objects(), ids=ids(builtin_objects()))
def test_builtin_objects_match_kubernetes_schema(doc: Doc, version: str) -> None:
    assert kubernetes_errors(doc.body, version) == []


@pytest.mark.parametrize("doc", custom_resources(), ids=ids(custom_resources()))
def test_custom_resources_match_their_crd(doc: Doc) -> None:
    if doc.key == ("install.istio.io/v1alpha1", "IstioOperator"):
        assert istio_operator_errors(doc.body) == []
    else:
        assert crd_errors(doc.body) == []


@pytest.mark.parametrize("source", [s for s, _ in mesh_configs()])
def test_mesh_config_extension_provider_is_valid(source: str) -> None:
    mesh = dict(mesh_configs())[source]
    assert mesh_config_errors(mesh) == []


def test_the_three_mesh_config_forms_agree() -> None:
    forms = dict(mesh_configs())
    assert len(forms) == 3, sorted(forms)
    providers = [mesh["extensionProviders"] for mesh in forms.values()]
    assert all(p == providers[0] for p in providers), forms


@pytest.mark.parametrize(
    ("kind", "name", "path", "value", "rename"),
    [
        (
            "Deployment",
            "authz",
            "spec.template.spec.containers.0.readinessProbe",
            None,
            "readinesProbe",
        ),
        (
            "Deployment",
            "authz",
            "spec.template.spec.containers.0.securityContext.runAsNonRoot",
            "yes",
            None,
        ),
        ("Service", "authz", "spec.ports.0.appProtocol", None, "app_protocol"),
        (
            "HorizontalPodAutoscaler",
            "authz",
            "spec.metrics.0.resource.target.averageUtilization",
            None,
            "averageUtilisation",
        ),
        ("PodDisruptionBudget", "authz", "spec.maxUnavailable", None, "maxUnavailabe"),
    ],
)
def test_kubernetes_validation_fails_on_a_broken_copy(
    kind: str, name: str, path: str, value: Any, rename: str | None
) -> None:
    broken = mutated(find(kind, name, under=K8S), path, value, rename=rename)
    assert kubernetes_errors(broken, KUBERNETES_VERSIONS[0]) != []


@pytest.mark.parametrize(
    ("kind", "name", "path", "value", "rename"),
    [
        # A misspelt field: the CRD schema alone would accept it (and the API
        # server would silently prune it).
        ("AuthorizationPolicy", "ext-authz", "spec.provider", None, "providers"),
        ("AuthorizationPolicy", "ext-authz", "spec.rules.0.to.0.operation", None, "operations"),
        (
            "RequestAuthentication",
            "authz-identity-token",
            "spec.jwtRules.0.forwardOriginalToken",
            None,
            "forwardToken",
        ),
        ("AuthService", "authz", "spec.failure_mode_allow", None, "failure_mode_allowed"),
        ("Mapping", "public", "spec.bypass_auth", None, "bypass_authz"),
        ("Filter", "authz", "spec.External.timeout_ms", None, "timeout"),
        ("FilterPolicy", "authz", "spec.rules.0.filters.0.onDeny", None, "on_deny"),
        # A wrong value.
        ("AuthorizationPolicy", "ext-authz", "spec.action", "custom", None),
        ("AuthService", "authz", "spec.proto", "grpc-web", None),
        ("AuthService", "authz", "spec.timeout_ms", "500ms", None),
        ("Mapping", "public", "spec.bypass_auth", "yes", None),
        (
            "RequestAuthentication",
            "authz-identity-token",
            "spec.jwtRules.0.fromHeaders.0.name",
            "",
            None,
        ),
        # A bad name in metadata.
        ("AuthService", "authz", "metadata.labels", {"app": 1}, None),
        # The DestinationRule: a misspelt field would be pruned, and the
        # outlier detection it configures silently not be there.
        ("DestinationRule", "authz", "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures", None,
         "consecutiveLocalOriginFailure"),
        ("DestinationRule", "authz", "spec.trafficPolicy.outlierDetection", None, "outlierDetections"),
        ("DestinationRule", "authz", "spec.trafficPolicy.connectionPool.tcp.connectTimeout", 250, None),
    ],
)
def test_crd_validation_fails_on_a_broken_copy(
    kind: str, name: str, path: str, value: Any, rename: str | None
) -> None:
    under = AUTH_GRPC if kind == "AuthService" else DEPLOY
    broken = mutated(find(kind, name, under=under), path, value, rename=rename)
    assert crd_errors(broken) != []


@pytest.mark.parametrize(
    ("path", "value", "rename"),
    [
        # Misspelt: the API server would drop these, and Emissary would then
        # forward only its default headers (or none of authz's answer).
        ("spec.allowed_request_headers", None, "allowed_request_header"),
        ("spec.allowed_authorization_headers", None, "allowed_authorisation_headers"),
        ("spec.path_prefix", None, "pathPrefix"),
        ("spec.status_on_error.code", None, "status"),
        # Wrong values.
        ("spec.proto", "HTTP", None),
        ("spec.allowed_request_headers", "x-api-key", None),
        ("spec.allowed_authorization_headers", {"x-user-id": True}, None),
        ("spec.timeout_ms", "0.5s", None),
    ],
)
def test_http_auth_service_validation_fails_on_a_broken_copy(
    path: str, value: Any, rename: str | None
) -> None:
    auth_service = find("AuthService", "authz", under=AUTH_HTTP)
    assert crd_errors(auth_service) == []
    broken = mutated(auth_service, path, value, rename=rename)
    assert crd_errors(broken) != []


GRPC_PROVIDER = "extensionProviders.0.envoyExtAuthzGrpc"
HTTP_PROVIDER = "extensionProviders.1.envoyExtAuthzHttp"


def has_path(node: Any, path: str) -> bool:
    """Whether the dotted ``path`` (list indexes as numbers) exists in ``node``."""
    for part in path.split("."):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return False
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True


@pytest.mark.parametrize(
    ("path", "value", "rename"),
    [
        (f"{GRPC_PROVIDER}.failOpen", None, "failopen"),
        (GRPC_PROVIDER, None, "envoyExtAuthzGRPC"),
        (f"{GRPC_PROVIDER}.timeout", "500ms", None),
        (f"{GRPC_PROVIDER}.statusOnError", 503, None),
        (f"{GRPC_PROVIDER}.port", "9191", None),
        # The HTTP provider: a misspelt field would be dropped without a word
        # (and, for the header lists, silently narrow what Envoy forwards).
        (HTTP_PROVIDER, None, "envoyExtAuthzHTTP"),
        (f"{HTTP_PROVIDER}.pathPrefix", None, "pathprefix"),
        (f"{HTTP_PROVIDER}.failOpen", None, "failopen"),
        (f"{HTTP_PROVIDER}.includeRequestHeadersInCheck", None, "includeRequestHeadersInChecks"),
        (f"{HTTP_PROVIDER}.headersToUpstreamOnAllow", None, "headersToUpstreamOnAllowed"),
        (f"{HTTP_PROVIDER}.headersToDownstreamOnDeny", None, "headersToDownstreamOnDenied"),
        # ... and wrong values.
        (f"{HTTP_PROVIDER}.timeout", "500ms", None),
        (f"{HTTP_PROVIDER}.statusOnError", 503, None),
        (f"{HTTP_PROVIDER}.port", "9292", None),
        (f"{HTTP_PROVIDER}.pathPrefix", "authz", None),
        (f"{HTTP_PROVIDER}.includeRequestHeadersInCheck", "authorization", None),
        (f"{HTTP_PROVIDER}.headersToUpstreamOnAllow.0", "", None),
    ],
)
def test_mesh_config_validation_fails_on_a_broken_copy(
    path: str, value: Any, rename: str | None
) -> None:
    for source, mesh in mesh_configs():
        # The mutation hits a field that is there (not one it adds), in a
        # config that is valid as it stands.
        assert has_path(mesh, path), (source, path)
        assert mesh_config_errors(mesh) == [], source
        assert mesh_config_errors(mutated(mesh, path, value, rename=rename)) != [], source


def test_istio_operator_validation_fails_on_a_misspelt_top_level_key() -> None:
    operator = find("IstioOperator", "authz-extension-provider")
    assert istio_operator_errors(mutated(operator, "spec.meshConfig", rename="meshconfig")) != []


# -- kustomize composition ---------------------------------------------------------


@pytest.mark.parametrize(
    "directory", KUSTOMIZATION_DIRS, ids=[str(d.relative_to(DEPLOY)) for d in KUSTOMIZATION_DIRS]
)
def test_kustomization_lists_every_manifest_in_its_directory(directory: Path) -> None:
    (kustomization,) = [d.body for d in load_docs(directory / "kustomization.yaml")]
    assert (kustomization["apiVersion"], kustomization["kind"]) == KUSTOMIZATION
    assert set(kustomization) <= KUSTOMIZATION_FIELDS, set(kustomization) - KUSTOMIZATION_FIELDS
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    for name in listed:
        assert (directory / name).is_file(), f"{directory}/{name} is listed but missing"
    # Examples are documentation, not applied (e.g. the Secret with keys).
    present = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    present = {n for n in present if not n.endswith(".example.yaml")}
    assert present == set(listed)


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (for `kubectl kustomize`) is not installed"
)
@pytest.mark.parametrize(
    "directory", KUSTOMIZATION_DIRS, ids=[str(d.relative_to(DEPLOY)) for d in KUSTOMIZATION_DIRS]
)
def test_kustomization_renders(directory: Path) -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    out = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    (kustomization,) = [d.body for d in load_docs(directory / "kustomization.yaml")]
    sources = [
        doc.body for name in kustomization["resources"] for doc in load_docs(directory / name)
    ]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in out) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in sources
    )
    namespace = kustomization.get("namespace")
    for body in out:
        if namespace and body["kind"] != "Namespace":
            assert body["metadata"]["namespace"] == namespace
        if body["kind"] not in {"Namespace"} and not namespace:
            assert body["metadata"].get("namespace"), (
                f"{body['kind']}/{body['metadata']['name']} has no namespace"
            )
    for version in KUBERNETES_VERSIONS[:1]:
        for body in out:
            if body["apiVersion"].count(".") == 0 or body["apiVersion"].split("/")[0].endswith(
                "k8s.io"
            ):
                assert kubernetes_errors(body, version) == []


# -- the authz workload lines up ---------------------------------------------------


def deployment() -> dict[str, Any]:
    return find("Deployment", "authz", under=K8S)


def container() -> dict[str, Any]:
    (authz,) = deployment()["spec"]["template"]["spec"]["containers"]
    return authz  # type: ignore[no-any-return]


def pod_labels() -> dict[str, str]:
    return deployment()["spec"]["template"]["metadata"]["labels"]  # type: ignore[no-any-return]


def args() -> dict[str, str]:
    """The container's ``--name=value`` arguments."""
    result: dict[str, str] = {}
    for arg in container()["args"][1:]:
        name, _, value = arg.partition("=")
        result[name] = value
    assert container()["args"][0] == "serve"
    return result


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_selectors_match_the_pods() -> None:
    labels = pod_labels()
    assert deployment()["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert matches(find("Service", "authz", under=K8S)["spec"]["selector"], labels)
    assert matches(find("PodDisruptionBudget", "authz")["spec"]["selector"]["matchLabels"], labels)
    assert matches(find("NetworkPolicy", "authz")["spec"]["podSelector"]["matchLabels"], labels)
    for constraint in deployment()["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert matches(constraint["labelSelector"]["matchLabels"], labels)


def test_the_autoscaler_owns_at_least_two_replicas() -> None:
    hpa = find("HorizontalPodAutoscaler", "authz")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "authz"}
    assert hpa["minReplicas"] >= 2
    assert hpa["maxReplicas"] > hpa["minReplicas"]
    # Re-applying a replicas field would fight the autoscaler.
    assert "replicas" not in deployment()["spec"]
    assert find("PodDisruptionBudget", "authz")["spec"]["maxUnavailable"] < hpa["minReplicas"]


def test_service_ports_reach_named_container_ports() -> None:
    ports = {p["name"]: p for p in container()["ports"]}
    assert ports["grpc"]["containerPort"] == 9191
    assert ports["http"]["containerPort"] == 8181
    assert ports["http-authz"] == {"name": "http-authz", "containerPort": 9292, "protocol": "TCP"}
    service = {p["name"]: p for p in find("Service", "authz", under=K8S)["spec"]["ports"]}
    assert service["grpc"] == {
        "name": "grpc",
        "port": 9191,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "grpc",
    }
    assert service["http"]["port"] == 8181 and service["http"]["targetPort"] == "http"
    assert service["http-authz"] == {
        "name": "http-authz",
        "port": 9292,
        "targetPort": "http-authz",
        "protocol": "TCP",
        "appProtocol": "http",
    }
    assert set(service) == set(ports)
    for rule in find("NetworkPolicy", "authz")["spec"]["ingress"]:
        for port in rule["ports"]:
            assert port["port"] in ports
    assert args()["--grpc-address"].endswith(":9191")
    assert args()["--http-address"].endswith(":8181")
    assert args()["--http-authz-address"] == "0.0.0.0:9292"


def test_the_http_door_is_fenced_to_the_gateways() -> None:
    """The HTTP door has no caller identity (the policy declares it
    gateway_only): only the gateways' namespaces reach it, a subset of
    those that reach the gRPC door, and no other rule opens it."""
    ingress = find("NetworkPolicy", "authz")["spec"]["ingress"]
    (grpc_rule,) = [r for r in ingress if {"port": "grpc", "protocol": "TCP"} in r["ports"]]
    (http_rule,) = [r for r in ingress if {"port": "http-authz", "protocol": "TCP"} in r["ports"]]
    assert grpc_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert http_rule["ports"] == [{"port": "http-authz", "protocol": "TCP"}]
    (peers,) = http_rule["from"]
    assert set(peers) == {"namespaceSelector"}
    (expression,) = peers["namespaceSelector"]["matchExpressions"]
    assert expression["key"] == "kubernetes.io/metadata.name" and expression["operator"] == "In"
    assert set(expression["values"]) == {"istio-system", "istio-ingress", "emissary", "ambassador"}
    assert peers in grpc_rule["from"]
    assert {"gateway_only": ["http"]} in policy()["callers"]


def test_the_grpc_door_is_bound_to_callers_with_certificates() -> None:
    flags = args()
    assert flags["--grpc-client-ca"].startswith("/etc/authz/tls/")
    (certificate,) = [d.body for d in load_docs(K8S / "certificate.yaml")]
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment()["spec"]["template"]["spec"]["volumes"]}
    (tls,) = [name for name, path in mounts.items() if path == "/etc/authz/tls"]
    assert volumes[tls]["secret"]["secretName"] == certificate["spec"]["secretName"]
    for flag, name in (("--grpc-tls-cert", "tls.crt"), ("--grpc-tls-key", "tls.key"), ("--grpc-client-ca", "ca.crt")):
        assert flags[flag] == f"/etc/authz/tls/{name}"
    assert "spiffe://cluster.local/ns/authz/sa/authz" in certificate["spec"]["uris"]


def test_http_door_flags() -> None:
    flags = args()
    assert flags["--http-authz-prefix"] == "/authz"
    # The edge Envoy in front (Emissary, the Istio ingress gateway) appends
    # its peer to x-forwarded-for: one trusted entry from the right.
    assert flags["--trusted-forwarded-hops"] == "1"
    # source.principal stays unknown through the HTTP door (see
    # docs/deploy-istio.md): XFCC is neither trusted nor forwarded to it.
    assert "--trust-xfcc" not in flags


def test_probes_use_the_http_port() -> None:
    authz = container()
    assert authz["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert authz["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert authz["startupProbe"]["httpGet"]["port"] == "http"


def test_workers_match_the_cpu_limit() -> None:
    cpu = str(container()["resources"]["limits"]["cpu"])
    cores = int(cpu) if cpu.isdigit() else max(1, int(cpu.removesuffix("m")) // 1000)
    assert int(args()["--workers"]) == cores


def test_grace_period_covers_prestop_and_drain() -> None:
    pre_stop = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(args()["--drain-timeout"])
    # The supervisor waits drain + 5 s for its workers before giving up.
    assert (
        deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        > int(pre_stop[1]) + drain + 5 - 1
    )


def test_pod_runs_locked_down() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    context = container()["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    account = find("ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"


def test_policy_and_keys_are_mounted_as_directories() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container()["volumeMounts"]}
    # subPath mounts never see ConfigMap/Secret updates: no hot reload.
    assert all("subPath" not in m and "subPathExpr" not in m for m in mounts.values())
    config_map = find("ConfigMap", volumes["policy"]["configMap"]["name"], under=K8S)
    secret = find("Secret", volumes["keys"]["secret"]["secretName"], under=K8S)
    assert mounts["policy"]["readOnly"] is True and mounts["keys"]["readOnly"] is True
    assert (
        "items" not in volumes["policy"]["configMap"] and "items" not in volumes["keys"]["secret"]
    )
    # --config names the mounted ConfigMap key ...
    config = Path(args()["--config"])
    assert config.parent == Path(mounts["policy"]["mountPath"])
    assert config.name in config_map["data"]
    # ... and every key file the policy names is a key of the Secret, in the
    # keys mount.
    policy_text = config_map["data"][config.name]
    named = re.findall(
        r"^\s*(?:jwks_file|keys_file|signing_key):\s*(\S+)", policy_text, re.MULTILINE
    )
    assert named
    for name in named:
        resolved = (config.parent / name).resolve() if not name.startswith("/") else Path(name)
        assert resolved.parent == Path(mounts["keys"]["mountPath"]), name
        assert resolved.name in secret["stringData"], name


def test_secret_example_is_not_applied_by_the_base() -> None:
    (kustomization,) = [d.body for d in load_docs(K8S / "kustomization.yaml")]
    assert "secret-keys.example.yaml" not in kustomization["resources"]
    assert not any(
        d.body["kind"] == "Secret"
        for name in kustomization["resources"]
        for d in load_docs(K8S / name)
    )


def test_namespace_enforces_the_restricted_pod_security_standard() -> None:
    labels = find("Namespace", "authz")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# -- Istio and Edge Stack point at authz ------------------------------------------


class ServiceAddress(NamedTuple):
    name: str
    namespace: str
    #: port name -> port number
    ports: dict[str, int]

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"


def service_address() -> ServiceAddress:
    (kustomization,) = [d.body for d in load_docs(K8S / "kustomization.yaml")]
    service = find("Service", "authz", under=K8S)
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    return ServiceAddress(service["metadata"]["name"], kustomization["namespace"], ports)


def policy() -> dict[str, Any]:
    config_map = find("ConfigMap", "authz-policy", under=K8S)
    return yaml.safe_load(config_map["data"]["policy.yaml"])  # type: ignore[no-any-return]


def headers_the_policy_reads() -> set[str]:
    """The request headers the deployed policy decides on: where its
    credentials are (issuers' ``from``, the API key header) and the headers
    its ``when`` conditions read."""
    config = policy()
    names: set[str] = set()
    for issuer in config["issuers"]:
        for place in issuer.get("from", [{"header": "authorization"}]):
            names.add(place.get("header", "cookie"))
    names.add(config["api_keys"]["header"])
    for rule in config["rules"]:
        names |= set(re.findall(r'request\.headers\["([^"]+)"\]', rule.get("when") or ""))
    assert "authorization" in names and "x-tenant" in names, names
    return names


def headers_the_http_door_needs() -> set[str]:
    """What an HTTP-door call must carry for the door to decide as the gRPC
    door would: the policy's headers, x-request-id (echoed in denials),
    x-forwarded-proto (request.scheme) and, with trusted hops, x-forwarded-for."""
    needed = headers_the_policy_reads() | {"x-request-id", "x-forwarded-proto"}
    if int(args().get("--trusted-forwarded-hops", "0")) > 0:
        needed.add("x-forwarded-for")
    if "--trust-xfcc" in args():
        needed.add("x-forwarded-client-cert")
    return needed


def headers_the_policy_sets() -> set[str]:
    """The headers an allow from authz sets on the upstream request."""
    config = policy()["response"]
    return set(config.get("headers", {})) | {config["identity_token"]["header"]}


#: What authz's denials carry besides the JSON body (docs/http-door.md).
DENIAL_HEADERS = {"content-type", "cache-control", "www-authenticate"}
#: Emissary's own additions for `proto: http` (emissary-ingress/emissary,
#: python/ambassador/envoy/v3/v3httpfilter.py: AllowedRequestHeaders,
#: AllowedAuthorizationHeaders); the latter list serves both directions.
EMISSARY_REQUEST_HEADERS = {
    "authorization",
    "cookie",
    "from",
    "proxy-authorization",
    "user-agent",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
}
EMISSARY_AUTHORIZATION_HEADERS = {
    "location",
    "authorization",
    "proxy-authenticate",
    "set-cookie",
    "www-authenticate",
}


def providers_by_kind(mesh: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The mesh config's extension providers, by their one provider field."""
    by_kind: dict[str, dict[str, Any]] = {}
    for provider in mesh["extensionProviders"]:
        (kind,) = set(provider) - {"name"}
        assert kind not in by_kind, kind
        by_kind[kind] = provider
    return by_kind


def deployed_callers() -> list[dict[str, Any]]:
    return policy()["callers"]  # type: ignore[no-any-return]


def identity_token() -> dict[str, Any]:
    return policy()["response"]["identity_token"]  # type: ignore[no-any-return]


def test_mesh_extension_providers_target_the_authz_service() -> None:
    address = service_address()
    for source, mesh in mesh_configs():
        providers = providers_by_kind(mesh)
        assert set(providers) == {"envoyExtAuthzGrpc", "envoyExtAuthzHttp"}, source

        assert providers["envoyExtAuthzGrpc"]["name"] == "authz", source
        grpc = providers["envoyExtAuthzGrpc"]["envoyExtAuthzGrpc"]
        assert grpc["service"] == address.fqdn, source
        assert grpc["port"] == address.ports["grpc"], source
        assert grpc["failOpen"] is False, source
        assert grpc["statusOnError"] == "503", source
        assert "includeRequestHeadersInCheck" not in grpc, source
        assert "includeRequestBodyInCheck" not in grpc, source

        assert providers["envoyExtAuthzHttp"]["name"] == "authz-http", source
        http = providers["envoyExtAuthzHttp"]["envoyExtAuthzHttp"]
        assert http["service"] == address.fqdn, source
        assert http["port"] == address.ports["http-authz"], source
        assert http["pathPrefix"] == args()["--http-authz-prefix"], source
        assert http["failOpen"] is False, source
        assert http["statusOnError"] == "503", source
        assert http["timeout"] == grpc["timeout"], source
        # Envoy adds only host, method, path and content-length by itself.
        forwarded = set(http["includeRequestHeadersInCheck"])
        assert len(forwarded) == len(http["includeRequestHeadersInCheck"]), source
        assert forwarded == headers_the_http_door_needs(), source
        upstream = http["headersToUpstreamOnAllow"]
        assert len(set(upstream)) == len(upstream), source
        assert set(upstream) == headers_the_policy_sets(), source
        assert set(http["headersToDownstreamOnDeny"]) == DENIAL_HEADERS, source
        assert "headersToDownstreamOnAllow" not in http, source
        assert "includeAdditionalHeadersInCheck" not in http, source
        assert "includeRequestBodyInCheck" not in http, source
        assert "includeHeadersInCheck" not in http, source


def test_the_destination_rule_routes_around_a_lost_pod_and_never_ejects_on_answers() -> None:
    destination_rule = find("DestinationRule", "authz")
    rule = destination_rule["spec"]
    assert rule["host"] == service_address().fqdn
    assert destination_rule["metadata"]["namespace"] == service_address().namespace
    outlier = rule["trafficPolicy"]["outlierDetection"]
    assert outlier["splitExternalLocalOriginErrors"] is True and outlier["consecutiveLocalOriginFailures"] >= 1
    # authz's answers (a 503 from an overloaded HTTP door) eject nobody.
    assert outlier["consecutive5xxErrors"] == 0 and outlier["consecutiveGatewayErrors"] == 0
    assert 0 < outlier["maxEjectionPercent"] < 100
    # A connect to a vanished pod gives up well within the providers' timeout.
    connect = float(rule["trafficPolicy"]["connectionPool"]["tcp"]["connectTimeout"].removesuffix("s"))
    timeouts = {float(provider[kind]["timeout"].removesuffix("s"))
                for _, mesh in mesh_configs() for kind, provider in providers_by_kind(mesh).items()}
    assert connect <= min(timeouts) / 2


def test_custom_policies_name_the_mesh_provider() -> None:
    providers = {p["name"] for _, mesh in mesh_configs() for p in mesh["extensionProviders"]}
    custom = [
        d.body
        for d in custom_resources()
        if d.body["kind"] == "AuthorizationPolicy" and d.body["spec"].get("action") == "CUSTOM"
    ]
    assert len(custom) == 2
    for policy in custom:
        assert policy["spec"]["provider"]["name"] in providers
        assert policy["spec"]["selector"]["matchLabels"]
        assert policy["spec"]["rules"]
    gateway = find("AuthorizationPolicy", "ext-authz-ingress")
    assert gateway["metadata"]["namespace"] == "istio-system"
    assert gateway["spec"]["selector"]["matchLabels"] == {"istio": "ingressgateway"}
    workload = find("AuthorizationPolicy", "ext-authz")
    assert workload["spec"]["rules"][0]["to"][0]["operation"]["paths"]


def test_request_authentication_trusts_the_identity_token_authz_issues() -> None:
    address = service_address()
    token = identity_token()
    (rule,) = find("RequestAuthentication", "authz-identity-token")["spec"]["jwtRules"]
    assert rule["issuer"] == token["issuer"]
    assert rule["audiences"] == [token["audience"]]
    assert rule["fromHeaders"] == [{"name": token["header"]}]
    assert rule["jwksUri"] == f"http://{address.fqdn}:{address.ports['http']}/.well-known/jwks.json"
    assert rule["forwardOriginalToken"] is True
    allow = find("AuthorizationPolicy", "require-authz-identity")["spec"]
    assert allow["action"] == "ALLOW"
    assert (
        allow["selector"]
        == find("RequestAuthentication", "authz-identity-token")["spec"]["selector"]
    )
    assert allow["rules"][0]["from"][0]["source"]["requestPrincipals"] == [f"{token['issuer']}/*"]


def test_istiod_may_fetch_the_jwks() -> None:
    http_rules = [
        r
        for r in find("NetworkPolicy", "authz")["spec"]["ingress"]
        if r["ports"][0]["port"] == "http"
    ]
    (rule,) = http_rules
    names = {
        v
        for peer in rule["from"]
        for e in peer["namespaceSelector"]["matchExpressions"]
        for v in e["values"]
    }
    assert {"istio-system", "monitoring"} <= names


def test_edge_stack_resources_target_the_authz_service() -> None:
    service = service_address()
    address = f"{service.name}.{service.namespace}:{service.ports['grpc']}"
    auth_service = find("AuthService", "authz", under=AUTH_GRPC)["spec"]
    external = find("Filter", "authz", under=EDGE)["spec"]["External"]
    for spec in (auth_service, external):
        assert spec["failure_mode_allow"] is False
        assert spec["status_on_error"] == {"code": 503}
        assert "include_body" not in spec
    assert auth_service["auth_service"] == address
    assert auth_service["proto"] == "grpc" and auth_service["protocol_version"] == "v3"
    # Callers bound (docs/security.md 60): the AuthService presents a client
    # certificate to the gRPC door; Edge Stack's Filter cannot, so it calls
    # the gateway-only HTTP door.
    (context,) = [d.body for d in load_docs(AUTH_GRPC / "tlscontext.yaml")]
    assert auth_service["tls"] == context["metadata"]["name"]
    (certificate,) = [d.body for d in load_docs(AUTH_GRPC / "certificate-client.yaml")]
    assert context["spec"]["secret"] == certificate["spec"]["secretName"]
    assert "client auth" in certificate["spec"]["usages"]
    admitted = [entry for entry in deployed_callers() if entry.get("destinations") == "any"]
    assert any(certificate["spec"]["uris"][0] in entry["principals"] for entry in admitted)
    assert external["auth_service"] == f"{service.name}.{service.namespace}:{service.ports['http-authz']}"
    assert external["proto"] == "http" and external["path_prefix"] == args()["--http-authz-prefix"]
    assert {"gateway_only": ["http"]} in deployed_callers()
    policy = find("FilterPolicy", "authz", under=EDGE)["spec"]
    assert {(f["name"], f["namespace"]) for r in policy["rules"] for f in r["filters"]} == {
        ("authz", "authz")
    }


def test_the_http_auth_service_targets_the_http_door() -> None:
    service = service_address()
    spec = find("AuthService", "authz", under=AUTH_HTTP)["spec"]
    assert (
        spec["auth_service"] == f"{service.name}.{service.namespace}:{service.ports['http-authz']}"
    )
    assert spec["proto"] == "http"
    assert spec["path_prefix"] == args()["--http-authz-prefix"]
    assert spec["failure_mode_allow"] is False
    assert spec["status_on_error"] == {"code": 503}
    # gRPC-only, or never wanted (authz refuses a body on the HTTP door).
    for absent in ("protocol_version", "include_body", "allow_request_body", "add_auth_headers"):
        assert absent not in spec, absent
    # Every header the door needs reaches it: Emissary's defaults plus the list.
    requested = spec["allowed_request_headers"]
    assert len(set(requested)) == len(requested)
    assert not set(requested) & EMISSARY_REQUEST_HEADERS, "already sent by Emissary"
    assert headers_the_http_door_needs() <= set(requested) | EMISSARY_REQUEST_HEADERS
    assert "x-forwarded-client-cert" not in requested
    # One list for both directions: the upstream headers of an allow and the
    # client headers of a denial.
    answered = set(spec["allowed_authorization_headers"]) | EMISSARY_AUTHORIZATION_HEADERS
    assert headers_the_policy_sets() | DENIAL_HEADERS <= answered
    assert (
        set(spec["allowed_authorization_headers"])
        == (headers_the_policy_sets() | DENIAL_HEADERS) - EMISSARY_AUTHORIZATION_HEADERS
    )


def test_the_two_auth_services_are_alternatives() -> None:
    """Emissary round-robins between AuthServices: the gRPC and HTTP variants
    share name and namespace, so applying one replaces the other."""
    grpc = find("AuthService", "authz", under=AUTH_GRPC)
    http = find("AuthService", "authz", under=AUTH_HTTP)
    assert (grpc["metadata"]["name"], grpc["metadata"]["namespace"]) == (
        http["metadata"]["name"],
        http["metadata"]["namespace"],
    )
    auth_services = [d for d in objects() if d.body["kind"] == "AuthService"]
    assert sorted(d.path.parent for d in auth_services) == [AUTH_GRPC, AUTH_HTTP]


def test_mappings_show_bypass_and_context_extensions() -> None:
    mappings = [d.body for d in objects() if d.body["kind"] == "Mapping"]
    assert any(m["spec"].get("bypass_auth") is True for m in mappings)
    contexts = [
        m["spec"]["auth_context_extensions"]
        for m in mappings
        if "auth_context_extensions" in m["spec"]
    ]
    assert {"route": "orders-admin"} in contexts
    # The policy rule reading that context exists.
    rules = [r for r in policy()["rules"] if "context" in (r.get("when") or "")]
    assert any("context.route" in r["when"] for r in rules)
    # The HTTP door cannot carry context, so a deny rule reading it matches
    # there (fails closed): each is scoped by paths to the routes whose
    # Mappings tag them, not left to deny every request through that door.
    prefixes = {
        m["spec"]["auth_context_extensions"]["route"]: m["spec"]["prefix"]
        for m in mappings
        if "auth_context_extensions" in m["spec"]
    }
    deny_rules = [r for r in rules if r["effect"] == "deny"]
    assert deny_rules
    for rule in deny_rules:
        assert rule.get("paths"), rule["name"]
        routes = re.findall(r'context\.route == "([^"]+)"', rule["when"])
        assert routes, rule["name"]
        for route in routes:
            assert f"{prefixes[route]}**" in rule["paths"], (rule["name"], route)


def test_timeouts_agree() -> None:
    seconds = {
        float(provider[kind]["timeout"].removesuffix("s"))
        for _, mesh in mesh_configs()
        for kind, provider in providers_by_kind(mesh).items()
    }
    milliseconds = {
        find("AuthService", "authz", under=AUTH_GRPC)["spec"]["timeout_ms"],
        find("AuthService", "authz", under=AUTH_HTTP)["spec"]["timeout_ms"],
        find("Filter", "authz")["spec"]["External"]["timeout_ms"],
    }
    assert len(seconds) == 1
    assert {s * 1000 for s in seconds} == milliseconds


def test_authz_s_own_sidecar_is_strict_and_the_gateways_are_admitted() -> None:
    """Callers bound under Istio (docs/deploy-istio.md): authz's sidecar
    accepts only mTLS on the ext_authz ports (so the caller it names in
    x-forwarded-client-cert is authenticated), and the policy admits the
    ingress gateway for any destination, sidecars for themselves."""
    (peer,) = [d.body for d in load_docs(DEPLOY / "istio" / "policies" / "peerauthentication-authz.yaml")]
    assert peer["metadata"]["namespace"] == "authz"
    assert matches(peer["spec"]["selector"]["matchLabels"], pod_labels())
    assert peer["spec"]["mtls"]["mode"] == "STRICT"
    assert peer["spec"]["portLevelMtls"] == {"8181": {"mode": "PERMISSIVE"}}
    gateways = [e for e in deployed_callers() if e.get("destinations") == "any"]
    assert any("spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account" in e["principals"]
               for e in gateways)
    assert {"principals": ["spiffe://cluster.local/ns/*/sa/*"], "destinations": "self"} in deployed_callers()
