"""Loading and checking the manifests under ``deploy/``.

Three kinds of checks, each usable on a mutated copy so the tests can show
that a broken manifest fails:

- :func:`kubernetes_errors`: built-in Kubernetes kinds against the Kubernetes
  OpenAPI schemas shipped by ``kubernetes-validate`` (strict: unknown fields
  are errors);
- :func:`crd_errors`: custom resources against the ``openAPIV3Schema`` of
  their CRD version (``tests/fixtures/crds``), metadata against the strict
  ``ObjectMeta`` schema;
- :func:`unknown_fields`: every field path of a document must be declared in
  the schema's ``properties``. Upstream CRD schemas never say
  ``additionalProperties: false``; the API server silently prunes undeclared
  fields instead, so a misspelt field would be dropped without a word.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

from testkit.paths import REPO

DEPLOY = REPO / "deploy"
# The Kubernetes-side manifests checked here (deploy/ holds other things too,
# such as plain Envoy configs, which are not Kubernetes objects).
ROOTS = (DEPLOY / "kubernetes", DEPLOY / "istio", DEPLOY / "edge-stack", DEPLOY / "monitoring", DEPLOY / "overlays")
CRDS = REPO / "tests" / "fixtures" / "crds"

# The oldest Kubernetes the manifests promise to work on, and the newest whose
# schemas the installed kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

# (apiVersion, kind) -> the CRD version schema it is checked against.
CRD_SCHEMAS: dict[tuple[str, str], str] = {
    (
        "security.istio.io/v1",
        "AuthorizationPolicy",
    ): "security.istio.io_authorizationpolicy_v1.json",
    (
        "security.istio.io/v1",
        "RequestAuthentication",
    ): "security.istio.io_requestauthentication_v1.json",
    (
        "networking.istio.io/v1",
        "DestinationRule",
    ): "networking.istio.io_destinationrule_v1.json",
    ("install.istio.io/v1alpha1", "IstioOperator"): "install.istio.io_istiooperator_v1alpha1.json",
    ("getambassador.io/v3alpha1", "AuthService"): "getambassador.io_authservice_v3alpha1.json",
    ("getambassador.io/v3alpha1", "Mapping"): "getambassador.io_mapping_v3alpha1.json",
    ("getambassador.io/v3alpha1", "Filter"): "getambassador.io_filter_v3alpha1.json",
    ("getambassador.io/v3alpha1", "FilterPolicy"): "getambassador.io_filterpolicy_v3alpha1.json",
    ("getambassador.io/v3alpha1", "RateLimitService"): "getambassador.io_ratelimitservice_v3alpha1.json",
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): "networking.istio.io_envoyfilter_v1alpha3.json",
    ("cert-manager.io/v1", "Certificate"): "cert-manager.io_certificate_v1.hand.json",
    ("security.istio.io/v1", "PeerAuthentication"): "security.istio.io_peerauthentication_v1.hand.json",
    ("getambassador.io/v3alpha1", "TLSContext"): "getambassador.io_tlscontext_v3alpha1.hand.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_podmonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrule_v1.json",
}
MESH_CONFIG_SCHEMA = "istio.mesh.v1alpha1_meshconfig_extensionproviders.hand.json"
ISTIO_OPERATOR_SPEC_SCHEMA = "install.istio.io_istiooperatorspec.hand.json"

IMPLICIT_ROOT_FIELDS = ("apiVersion", "kind", "metadata")

KUSTOMIZATION = ("kustomize.config.k8s.io/v1beta1", "Kustomization")
#: A kustomize Component (deploy/monitoring): optional, added by an overlay.
COMPONENT = ("kustomize.config.k8s.io/v1alpha1", "Component")

# YAML files under deploy/ that are not Kubernetes objects.
HELM_VALUES = (DEPLOY / "istio" / "mesh" / "istiod-values.yaml",)


@dataclass(frozen=True)
class Doc:
    """One YAML document of a file under ``deploy/``."""

    path: Path
    index: int
    body: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return (self.body.get("apiVersion", ""), self.body.get("kind", ""))

    @property
    def name(self) -> str:
        return str(self.body.get("metadata", {}).get("name", ""))

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}#{self.index}:{self.body.get('kind')}/{self.name}"


def load_docs(path: Path) -> list[Doc]:
    with path.open(encoding="utf-8") as handle:
        return [
            Doc(path, i, body)
            for i, body in enumerate(yaml.safe_load_all(handle))
            if body is not None
        ]


def manifest_files() -> list[Path]:
    return sorted(p for root in ROOTS for p in root.rglob("*.yaml") if p not in HELM_VALUES)


def all_docs() -> list[Doc]:
    return [doc for path in manifest_files() for doc in load_docs(path)]


def objects() -> list[Doc]:
    """Every Kubernetes object under deploy/ (kustomization files excluded)."""
    return [doc for doc in all_docs() if doc.key not in (KUSTOMIZATION, COMPONENT)]


def builtin_objects() -> list[Doc]:
    return [doc for doc in objects() if doc.key not in CRD_SCHEMAS]


def custom_resources() -> list[Doc]:
    return [doc for doc in objects() if doc.key in CRD_SCHEMAS]


def find(kind: str, name: str, *, under: Path = DEPLOY) -> dict[str, Any]:
    matches = [
        d.body
        for d in objects()
        if d.body["kind"] == kind and d.name == name and under in d.path.parents
    ]
    assert len(matches) == 1, f"expected one {kind}/{name} under {under}, found {len(matches)}"
    return matches[0]


# -- Kubernetes built-in kinds ---------------------------------------------------


def kubernetes_errors(body: dict[str, Any], version: str) -> list[str]:
    """Problems with a built-in object under Kubernetes ``version`` (strict)."""
    try:
        kubernetes_validate.validate(body, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        return [f"{where}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [exc.message]
    return []


@cache
def _kubernetes_definitions() -> dict[str, Any]:
    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    strict = schemas / f"v{KUBERNETES_VERSIONS[0]}-local-strict" / "_definitions.json"
    return json.loads(strict.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def object_meta_errors(metadata: Any) -> list[str]:
    """Problems with ``metadata`` against the strict ObjectMeta schema."""
    definitions = _kubernetes_definitions()
    registry: Registry[Any] = Resource.from_contents(definitions) @ Registry()
    schema = {
        "$ref": f"{definitions['$id']}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    }
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return [
        f"metadata/{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(metadata)
    ]


# -- custom resources --------------------------------------------------------------


@cache
def crd_schema(name: str) -> dict[str, Any]:
    return json.loads((CRDS / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def schema_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    """Problems with ``instance`` under an OpenAPI v3 (CRD) schema.

    OpenAPI 3.0 schemas are closest to JSON Schema draft 4 (boolean
    ``exclusiveMaximum``); the ``x-kubernetes-*`` extensions are ignored here
    and handled by :func:`unknown_fields`.
    """
    validator = jsonschema.Draft4Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '.'}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def crd_errors(body: dict[str, Any]) -> list[str]:
    """Every problem with a custom resource: schema, unknown fields, metadata."""
    key = (body.get("apiVersion", ""), body.get("kind", ""))
    if key not in CRD_SCHEMAS:
        return [f"no CRD schema for {key}"]
    schema = crd_schema(CRD_SCHEMAS[key])
    problems = schema_errors(body, schema)
    # apiVersion, kind and metadata are implicit in every CRD schema.
    rest = {k: v for k, v in body.items() if k not in IMPLICIT_ROOT_FIELDS}
    problems += [f"{p}: unknown field" for p in unknown_fields(rest, schema)]
    problems += object_meta_errors(body.get("metadata", {}))
    if not body.get("metadata", {}).get("name"):
        problems.append("metadata/name: missing")
    return problems


def _declared(schema: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The properties a node declares (its own and its allOf/anyOf/oneOf
    branches') and its additionalProperties."""
    properties = dict(schema.get("properties") or {})
    for combinator in ("allOf", "anyOf", "oneOf"):
        for branch in schema.get(combinator) or ():
            properties.update(branch.get("properties") or {})
    return properties, schema.get("additionalProperties")


def unknown_fields(instance: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Field paths of ``instance`` that ``schema`` does not declare.

    An object node with ``properties`` admits only those keys (and the keys
    its ``additionalProperties`` schema covers); that holds even under
    ``x-kubernetes-preserve-unknown-fields``, where the API server would keep a
    typo but the controller would ignore it. A node with neither (``metadata``,
    opaque maps) is not descended into.
    """
    problems: list[str] = []
    if isinstance(instance, dict):
        properties, additional = _declared(schema)
        if not properties and not isinstance(additional, dict):
            return problems
        for key, value in instance.items():
            where = f"{path}.{key}"
            if key in properties:
                problems += unknown_fields(value, properties[key], where)
            elif isinstance(additional, dict):
                problems += unknown_fields(value, additional, where)
            else:
                problems.append(where)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(instance):
            problems += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return problems


# -- Istio mesh config (not a CRD) ----------------------------------------------


def mesh_config_errors(mesh: Any) -> list[str]:
    schema = crd_schema(MESH_CONFIG_SCHEMA)
    return schema_errors(mesh, schema) + [
        f"{p}: unknown field" for p in unknown_fields(mesh, schema)
    ]


def istio_operator_errors(body: dict[str, Any]) -> list[str]:
    """The official (schemaless) CRD, then the spec's top-level keys, then
    meshConfig."""
    problems = crd_errors(body)
    spec_schema = crd_schema(ISTIO_OPERATOR_SPEC_SCHEMA)
    spec = body.get("spec", {})
    problems += [f"spec/{e}" for e in schema_errors(spec, spec_schema)]
    problems += [f"spec{p}: unknown field" for p in unknown_fields(spec, spec_schema)]
    problems += [f"spec/meshConfig/{e}" for e in mesh_config_errors(spec.get("meshConfig", {}))]
    return problems


def mesh_configs() -> Iterator[tuple[str, Any]]:
    """Every form of the mesh config in deploy/istio/mesh, parsed."""
    for doc in objects():
        if doc.key == ("install.istio.io/v1alpha1", "IstioOperator"):
            yield doc.id, doc.body["spec"]["meshConfig"]
        elif doc.key == ("v1", "ConfigMap") and doc.name == "istio":
            yield doc.id, yaml.safe_load(doc.body["data"]["mesh"])
    for path in HELM_VALUES:
        with path.open(encoding="utf-8") as handle:
            yield str(path.relative_to(REPO)), yaml.safe_load(handle)["meshConfig"]


def mutated(
    body: dict[str, Any], path: str, value: Any = None, *, rename: str | None = None
) -> dict[str, Any]:
    """A deep copy of ``body`` with the field at dotted ``path`` (list indexes
    as numbers) set to ``value``, or renamed to ``rename``."""
    result = copy.deepcopy(body)
    *parents, last = path.split(".")
    node: Any = result
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if rename is not None:
        node[rename] = node.pop(last)
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return result
