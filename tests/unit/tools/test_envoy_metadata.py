"""What the generated Envoy configs do with authz's answer
(authz.tools.envoy_metadata): the access log, rate-limit actions and
local_ratelimit, and the HTTP door's header lists. Real Envoy validates
every variant; tests/integration/test_metadata.py runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.tools.envoy_config import EnvoyOptions, render
from authz.tools.envoy_metadata import NAMESPACE, LocalLimit
from testkit.pki import MeshCA
from testkit.procs import envoy_validate


def _options(**extra: Any) -> EnvoyOptions:
    return EnvoyOptions(shape="edge", authz=["127.0.0.1:9191"], access_log="/tmp/access.log",
                        metadata_keys=["sub", "tier"],
                        client_headers=["set-cookie"], rate_limit_by=[("tier",), ("tier", "sub")],
                        local_rate_limits=[LocalLimit.parse("tier=free:3/1m"),
                                           LocalLimit.parse("tier=silver,sub=*:10/1h")],
                        **extra)


def _hcm(options: EnvoyOptions) -> dict[str, Any]:
    document = yaml.safe_load(render(options))
    return document["staticResources"]["listeners"][0]["filterChains"][0]["filters"][-1]["typedConfig"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("shape", ["edge", "sidecar"])
def test_every_variant_validates(tmp_path: Path, shape: str, protocol: str) -> None:
    ca = MeshCA(tmp_path)
    chain, key = ca.workload("spiffe://cluster.local/ns/a/sa/b", "w")
    options = _options(protocol=protocol)
    options.shape, options.cert_chain = shape, str(chain)
    options.private_key, options.ca_cert = str(key), str(ca.cert_path)
    config = tmp_path / f"{shape}-{protocol}.yaml"
    config.write_text(render(options))
    envoy_validate(config)


def test_the_access_log_logs_authz_metadata_and_the_path_without_its_query() -> None:
    hcm = _hcm(_options())
    [log] = hcm["accessLog"]
    assert log["typedConfig"]["path"] == "/tmp/access.log"
    fields = log["typedConfig"]["logFormat"]["jsonFormat"]
    assert fields["authz"] == {key: f"%DYNAMIC_METADATA({NAMESPACE}:{key})%"
                               for key in ("reason", "rule", "issuer", "sub", "tier")}
    assert fields["path"] == "%PATH(NQ)%"
    assert not any("authorization" in str(value).lower() or "cookie" in str(value).lower() for value in fields.values())
    assert "accessLog" not in _hcm(EnvoyOptions(shape="edge", authz=["127.0.0.1:9191"]))


def test_local_ratelimit_runs_after_ext_authz_with_descriptors_from_metadata() -> None:
    hcm = _hcm(_options())
    names = [f["name"] for f in hcm["httpFilters"]]
    assert names == ["envoy.filters.http.ext_authz", "envoy.filters.http.local_ratelimit", "envoy.filters.http.router"]
    limit = hcm["httpFilters"][1]["typedConfig"]
    assert limit["filterEnabled"]["defaultValue"]["numerator"] == 100
    assert limit["filterEnforced"]["defaultValue"]["numerator"] == 100
    assert limit["descriptors"] == [
        {"entries": [{"key": "tier", "value": "free"}],
         "tokenBucket": {"maxTokens": 3, "tokensPerFill": 3, "fillInterval": "60s"}},
        {"entries": [{"key": "tier", "value": "silver"}, {"key": "sub"}],
         "tokenBucket": {"maxTokens": 10, "tokensPerFill": 10, "fillInterval": "3600s"}},
    ]
    # source: DYNAMIC (the request's dynamic metadata) is the enum's zero, left out of the JSON form.
    action = {"metadata": {"descriptorKey": "tier", "metadataKey": {"key": NAMESPACE, "path": [{"key": "tier"}]}}}
    assert limit["rateLimits"][0] == {"actions": [action]}
    # The route carries the same actions, for a shared rate-limit service.
    route = hcm["routeConfig"]["virtualHosts"][0]["routes"][-1]["route"]
    assert route["rateLimits"] == limit["rateLimits"]
    assert len(route["rateLimits"][1]["actions"]) == 2


def test_http_door_metadata_and_client_headers_are_sorted_by_name() -> None:
    hcm = _hcm(_options(protocol="http"))
    response = hcm["httpFilters"][0]["typedConfig"]["httpService"]["authorizationResponse"]
    exact = {field: [p["exact"] for p in response[field]["patterns"]] for field in response}
    assert exact["dynamicMetadataFromHeaders"] == ["reason", "rule", "issuer", "sub", "tier"]
    assert exact["allowedClientHeadersOnSuccess"] == ["set-cookie"]
    # No metadata header is one Envoy copies to the client or the upstream.
    copied = set(exact["allowedUpstreamHeaders"]) | set(exact["allowedClientHeaders"]) | {"set-cookie"}
    assert copied.isdisjoint(exact["dynamicMetadataFromHeaders"])


@pytest.mark.parametrize(("text", "expected"), [
    ("tier=free:3/1m", LocalLimit((("tier", "free"),), 3, 60.0)),
    ("tier=free,sub=*:5/30s", LocalLimit((("tier", "free"), ("sub", "")), 5, 30.0)),
    ("plan=basic:100/1h", LocalLimit((("plan", "basic"),), 100, 3600.0)),
])
def test_local_limits_parse(text: str, expected: LocalLimit) -> None:
    assert LocalLimit.parse(text) == expected


@pytest.mark.parametrize("text", ["tier=free", "tier:3/1m", "Tier=free:3/1m", "tier=free:0/1m", "tier=free:3/500ms",
                                  "tier=free:3/1.5s", "tier=:3/1m", "tier=free:3/soon"])
def test_local_limits_refused(text: str) -> None:
    with pytest.raises(ValueError):
        LocalLimit.parse(text)


@pytest.mark.parametrize(("flags", "message"), [
    (["--local-rate-limit", "tier=free:3/1m"], "no --rate-limit-by makes a descriptor of"),
    (["--rate-limit-by", "tier,Sub"], "invalid metadata key 'Sub'"),
    (["--metadata-key", "a:b"], "invalid metadata key 'a:b'"),
    (["--rate-limit-by", "tier", "--local-rate-limit", "tier=free"], "expected KEY=VALUE"),
])
def test_the_command_refuses_what_would_never_match(flags: list[str], message: str) -> None:
    run = subprocess.run([sys.executable, "-m", "authz", "envoy-config", "--shape", "edge", "--authz", "127.0.0.1:9191",
                          *flags], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stdout == ""
    assert message in run.stderr
