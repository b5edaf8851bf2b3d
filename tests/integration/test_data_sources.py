"""Outside data (``data:``) through real Envoy on both doors: a rule reads a
local data endpoint's answer for the caller's tenant; the endpoint's
outages deny within the source's timeout and stall no other request."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from authz.tools.envoy_config import EnvoyOptions
from testkit.endpoint import Endpoint, Seen
from testkit.paths import ACCEPTANCE
from testkit.procs import Authz, Echo, Envoy, free_port, http_get
from testkit.tokens import claims, token

pytestmark = pytest.mark.integration


def plans(seen: Seen) -> tuple[int, Any]:
    tenant = seen.path.rsplit("/", 1)[-1]
    return 200, {"tier": "gold" if tenant.startswith("gold") else "free"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("data-sources")
    shutil.copy(ACCEPTANCE / "corp.jwks.json", tmp / "corp.jwks.json")
    (tmp / "plans.token").write_text("plans-secret\n")
    with Endpoint(plans) as endpoint, Echo() as echo:
        policy = tmp / "policy.yaml"
        policy.write_text(f"""\
version: 1
issuers:
  - name: corp
    issuer: https://idp.example.com
    audiences: [orders-api]
    jwks_file: corp.jwks.json
    algorithms: [RS256]
    roles_claim: groups
data:
  plans:
    url: {endpoint.url}/tenants/{{identity.claims.tenant}}
    headers: {{authorization: {{file: plans.token, prefix: "Bearer "}}}}
    cache_ttl: 30s
    timeout: 1s
roles:
  orders-reader:
    - {{paths: ["/api/reports/*"], when: 'data.plans.tier == "gold"'}}
    - {{paths: ["/api/orders/*"]}}
""")
        http_address = f"127.0.0.1:{free_port()}"
        extra = ["--http-authz-address", http_address, "--http-authz-prefix", "/authz"]
        with Authz(policy, workers=1, extra=extra) as authz, \
                Envoy(tmp, EnvoyOptions(shape="edge", authz=[authz.grpc_address],
                                        upstream=echo.address)) as grpc_envoy, \
                Envoy(tmp / "..", EnvoyOptions(shape="edge", authz=[http_address], upstream=echo.address,
                                               protocol="http", path_prefix="/authz")) as http_envoy:
            yield {"grpc": grpc_envoy, "http": http_envoy, "endpoint": endpoint}


def get(envoy: Envoy, path: str, tenant: str) -> tuple[int, dict[str, str], bytes]:
    return http_get(envoy.url + path, {"authorization": f"Bearer {token(claims(tenant=tenant))}"})


@pytest.mark.parametrize("door", ["grpc", "http"])
def test_a_rule_reads_outside_data_for_the_callers_tenant(setup: dict[str, Any], door: str) -> None:
    endpoint: Endpoint = setup["endpoint"]
    envoy = setup[door]
    asked = endpoint.count()
    assert get(envoy, "/api/reports/1", f"gold-{door}")[0] == 200
    status, _headers, body = get(envoy, "/api/reports/1", f"free-{door}")
    assert status == 403 and json.loads(body)["reason"] == "no_permission"
    assert endpoint.count() == asked + 2
    assert endpoint.seen[-1].headers["authorization"] == "Bearer plans-secret"
    assert get(envoy, "/api/reports/2", f"gold-{door}")[0] == 200  # the answer is cached
    assert endpoint.count() == asked + 2


@pytest.mark.parametrize("mode", ["hang", "500", "garbage"])
def test_sec_84_an_outage_denies_within_the_timeout_and_stalls_no_other_request(setup: dict[str, Any],
                                                                                mode: str) -> None:
    endpoint: Endpoint = setup["endpoint"]
    endpoint.mode = mode
    try:
        for door in ("grpc", "http"):
            status, _headers, body = get(setup[door], "/api/reports/1", f"gold-{mode}-{door}")
            assert status == 403 and json.loads(body)["reason"] == "data_unavailable"
            asked = endpoint.count()
            assert get(setup[door], "/api/orders/1", f"gold-{mode}-{door}")[0] == 200  # needs no data
            assert endpoint.count() == asked
    finally:
        endpoint.mode = "ok"
