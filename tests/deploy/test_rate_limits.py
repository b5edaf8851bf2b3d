"""The rate-limit wiring for the shared limiter (docs/rate-limits.md):
deploy/istio/rate-limits and deploy/edge-stack/rate-limits.

Their schemas are checked with every other manifest (tests/deploy/
test_manifests.py: the EnvoyFilter and RateLimitService CRDs). Here: what the
schemas cannot say. The EnvoyFilter's patches are real Envoy config (spliced
into a bootstrap the way istiod applies them, then ``envoy --mode validate``);
the descriptors the limiter counts are the ones the actions and labels make;
and the metadata key and header they read are ones a policy may send. Each
check also fails on a deliberately broken copy.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.config import load_policy
from authz.errors import ConfigError
from authz.tools.envoy_config import EnvoyOptions, render
from authz.tools.envoy_metadata import NAMESPACE
from testkit.procs import envoy_validate
from tests.deploy.manifests import DEPLOY, find, mutated

ISTIO = DEPLOY / "istio" / "rate-limits"
EDGE = DEPLOY / "edge-stack" / "rate-limits"
UNITS = {"second", "minute", "hour", "day"}


def _envoy_filter() -> dict[str, Any]:
    return find("EnvoyFilter", "authz-rate-limits", under=ISTIO)


def _limiter_config(under: Path) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(find("ConfigMap", "ratelimit-config", under=under)["data"]["config.yaml"])
    return config


def limiter_config_errors(config: dict[str, Any]) -> list[str]:
    """Problems with an envoyproxy/ratelimit config: a domain, and
    descriptors each with a key, a value and either a limit or unlimited."""
    problems = [] if isinstance(config.get("domain"), str) and config["domain"] else ["domain: missing"]
    for i, descriptor in enumerate(config.get("descriptors") or []):
        unknown = set(descriptor) - {"key", "value", "rate_limit", "descriptors", "shadow_mode"}
        unknown -= {"unlimited"} if descriptor.get("unlimited") is True else set()
        if unknown:
            problems.append(f"descriptors[{i}]: unknown fields {sorted(unknown)}")
        if not descriptor.get("key"):
            problems.append(f"descriptors[{i}].key: missing")
        limit = descriptor.get("rate_limit")
        if ("rate_limit" in descriptor) == (descriptor.get("unlimited") is True):
            problems.append(f"descriptors[{i}]: give rate_limit or unlimited: true")
        elif limit is not None and (limit.get("unit") not in UNITS
                                    or not isinstance(limit.get("requests_per_unit"), int)):
            problems.append(f"descriptors[{i}].rate_limit: unit one of {sorted(UNITS)}, requests_per_unit an integer")
    return problems


def _spliced(tmp_path: Path, envoy_filter: dict[str, Any]) -> Path:
    """An Envoy bootstrap (authz envoy-config's edge shape) with the
    EnvoyFilter's patches applied as istiod applies them: the HTTP filter
    inserted before the router, the virtual host's fields merged, and the
    outbound cluster Istio makes for the ratelimit Service."""
    document = yaml.safe_load(render(EnvoyOptions(shape="edge", authz=["127.0.0.1:9191"])))
    hcm = document["staticResources"]["listeners"][0]["filterChains"][0]["filters"][0]["typedConfig"]
    for patch in envoy_filter["spec"]["configPatches"]:
        value = copy.deepcopy(patch["patch"]["value"])
        if patch["applyTo"] == "HTTP_FILTER":
            assert patch["patch"]["operation"] == "INSERT_BEFORE"
            sub_filter = patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]
            assert sub_filter["name"] == "envoy.filters.http.router"
            hcm["httpFilters"].insert(len(hcm["httpFilters"]) - 1, value)
        elif patch["applyTo"] == "VIRTUAL_HOST":
            assert patch["patch"]["operation"] == "MERGE"
            hcm["routeConfig"]["virtualHosts"][0].update(value)
        else:
            raise AssertionError(f"unexpected patch {patch['applyTo']}")
    cluster = copy.deepcopy(document["staticResources"]["clusters"][0])  # the authz cluster: HTTP/2, static
    cluster["name"] = cluster["loadAssignment"]["clusterName"] = "outbound|8081||ratelimit.ratelimit.svc.cluster.local"
    document["staticResources"]["clusters"].append(cluster)
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(document))
    return config


def test_the_envoy_filter_patches_are_envoy_config_that_envoy_accepts(tmp_path: Path) -> None:
    envoy_validate(_spliced(tmp_path, _envoy_filter()))


def test_a_broken_patch_is_refused_by_envoy(tmp_path: Path) -> None:
    broken = mutated(_envoy_filter(), "spec.configPatches.1.patch.value.rate_limits.0.actions.0.metadata.source",
                     "DYNAMC")
    with pytest.raises(AssertionError):
        envoy_validate(_spliced(tmp_path, broken))


def test_the_rate_limit_filter_runs_after_ext_authz_and_asks_the_limiter() -> None:
    http_filter, vhost = _envoy_filter()["spec"]["configPatches"]
    assert http_filter["match"]["context"] == vhost["match"]["context"] == "GATEWAY"
    config = http_filter["patch"]["value"]["typed_config"]
    assert config["domain"] == _limiter_config(ISTIO)["domain"]
    cluster = config["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    assert cluster == "outbound|8081||ratelimit.ratelimit.svc.cluster.local"
    # The gateway it patches is the one the CUSTOM policy sends to authz.
    gateway = find("AuthorizationPolicy", "ext-authz-ingress")
    assert _envoy_filter()["spec"]["workloadSelector"]["labels"] == gateway["spec"]["selector"]["matchLabels"]
    assert _envoy_filter()["metadata"]["namespace"] == gateway["metadata"]["namespace"]
    host = vhost["match"]["routeConfiguration"]["vhost"]["name"].rsplit(":", 1)[0]
    assert host in gateway["spec"]["rules"][0]["to"][0]["operation"]["hosts"]


def descriptor_errors(actions: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    """Descriptors of the limiter config that the actions never make."""
    made = {action["metadata"]["descriptor_key"] for action in actions
            if action["metadata"]["metadata_key"]["key"] == NAMESPACE}
    return [f"descriptor key {d['key']!r} is made by no action" for d in config["descriptors"] if d["key"] not in made]


def test_istio_descriptors_are_the_ones_authz_metadata_makes() -> None:
    (rate_limit,) = _envoy_filter()["spec"]["configPatches"][1]["patch"]["value"]["rate_limits"]
    actions = rate_limit["actions"]
    for action in actions:
        key = action["metadata"]["metadata_key"]
        assert (key["key"], [s["key"] for s in key["path"]]) == (NAMESPACE, [action["metadata"]["descriptor_key"]])
        assert action["metadata"]["source"] == "DYNAMIC"
    config = _limiter_config(ISTIO)
    assert limiter_config_errors(config) == []
    assert descriptor_errors(actions, config) == []
    assert {(d["key"], d["value"]) for d in config["descriptors"]} == {("tier", "free"), ("tier", "gold")}
    # Broken copies fail.
    assert descriptor_errors(actions, {"descriptors": [{"key": "plan", "value": "free"}]})
    assert limiter_config_errors({"domain": "authz", "descriptors": [{"key": "tier", "value": "free",
                                                                       "rate_limit": {"unit": "fortnight",
                                                                                      "requests_per_unit": 3}}]})
    assert limiter_config_errors({"descriptors": [{"key": "tier", "value": "gold", "unlimited": True,
                                                   "rate_limit": {"unit": "minute", "requests_per_unit": 1}}]})


def test_edge_stack_descriptors_are_the_ones_the_mapping_labels_make() -> None:
    service = find("RateLimitService", "ratelimit", under=EDGE)["spec"]
    config = _limiter_config(EDGE)
    assert limiter_config_errors(config) == []
    assert service["domain"] == config["domain"]
    assert service["service"] == "ratelimit.ratelimit:8081" and service["protocol_version"] == "v3"
    mapping = find("Mapping", "orders-api", under=EDGE)["spec"]
    assert not mapping.get("bypass_auth")  # the header is authz's only where authz runs
    (group,) = mapping["labels"]["ambassador"]
    (labels,) = group.values()
    keys = {label["request_headers"]["key"] for label in labels}
    assert {d["key"] for d in config["descriptors"]} <= keys
    assert {label["request_headers"]["header_name"] for label in labels} == {"x-authz-tier"}


def test_the_key_and_header_they_read_are_ones_a_policy_may_send(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(
        "version: 1\nresponse:\n  headers:\n    x-authz-tier: identity.claims.tier\n"
        "  metadata:\n    tier: identity.claims.tier\n")
    policy = load_policy(str(tmp_path / "policy.yaml"))
    assert [name for name, _ in policy.response.metadata] == ["tier"]
    assert [name for name, _ in policy.response.headers] == ["x-authz-tier"]
    (tmp_path / "policy.yaml").write_text("version: 1\nresponse:\n  metadata:\n    Tier: identity.claims.tier\n")
    with pytest.raises(ConfigError):
        load_policy(str(tmp_path / "policy.yaml"))
