"""A policy directory through a real Envoy (edge shape) to authz: the root's
rules, each team's roles and rules inside what it owns, nothing outside."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from authz.tools.devtoken import mint
from authz.tools.envoy_config import EnvoyOptions
from testkit.paths import EXAMPLES
from testkit.procs import Authz, Echo, Envoy, http_get

POLICY = EXAMPLES / "policy-dir"


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    tmp = tmp_path_factory.mktemp("policy-dir")
    with Echo() as echo, Authz(POLICY, workers=2, worker_ports=True) as authz, \
            Envoy(tmp, EnvoyOptions(shape="edge", authz=authz.worker_addresses, upstream=echo.address)) as proxy:
        yield proxy


def bearer(*roles: str, sub: str = "alice") -> dict[str, str]:
    token = mint(str(POLICY), issuer_name="dev", key_file=str(EXAMPLES / "keys" / "dev-issuer.pem"), subject=sub,
                 roles=list(roles), scopes=[], claims=[], ttl=300, audience=None)
    return {"authorization": f"Bearer {token}"}


def call(envoy: Envoy, path: str, headers: dict[str, str], *, method: str = "GET",
         host: str = "shop.example.com") -> tuple[int, dict[str, object]]:
    status, _headers, body = http_get(envoy.url + path, {"host": host, **headers}, method=method)
    return status, json.loads(body)


def test_a_team_role_allows_inside_its_scope_and_the_upstream_learns_who(envoy: Envoy) -> None:
    status, body = call(envoy, "/api/orders/7", bearer("orders-reader"))
    assert status == 200
    headers = body["headers"]
    assert isinstance(headers, dict) and headers["x-user-id"] == "alice" and headers["x-identity-token"]


def test_a_team_role_allows_nothing_outside_its_scope(envoy: Envoy) -> None:
    status, body = call(envoy, "/api/orders/7", bearer("orders-admin"), host="admin.example.com")
    assert (status, body["reason"]) == (403, "no_permission")
    status, body = call(envoy, "/api/users/7", bearer("orders-admin"))
    assert (status, body["reason"]) == (403, "no_permission")


def test_the_roots_deny_rule_applies_first_to_a_teams_traffic(envoy: Envoy) -> None:
    status, body = call(envoy, "/api/orders/debug/vars", bearer("orders-admin"))
    assert (status, body["reason"]) == (403, "denied_by_rule")


def test_a_scope_on_the_destination_fails_closed_where_the_edge_has_none(envoy: Envoy) -> None:
    # The payments team owns requests to its workload; the edge sends no
    # destination principal, so its public rule allows nothing here.
    status, body = call(envoy, "/api/payments/status", {})
    assert (status, body["reason"]) == (401, "missing_credential")
    status, _body = call(envoy, "/healthz", {})  # the root's public rule
    assert status == 200
