"""``deny_with`` through a real Envoy on both doors: the policy's redirect,
its JSON and text denials, and the defaults it leaves alone, with the same
status, headers and body bytes to the client whichever door Envoy calls; the
HTTP door's Envoy passes the policy's denial headers because the config says
so (``PolicyHeaders.of``, what ``authz envoy-config --config`` reads)."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from authz.config import load_policy
from authz.tools.envoy_config import EnvoyOptions
from authz.tools.policy_headers import PolicyHeaders
from testkit.procs import Authz, Echo, Envoy, free_port

pytestmark = pytest.mark.integration

POLICY = Path(__file__).resolve().parents[1] / "fixtures" / "deny_with" / "policy.yaml"
KEY = {"x-api-key": "password"}
#: What the client gets besides Envoy's own (date, server, x-envoy-*).
UUID = re.compile("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SHOWN = ("content-type", "cache-control", "www-authenticate", "location", "x-denied-by", "content-length")


def fetch(base: str, target: str, headers: dict[str, str], method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One request, redirects not followed: (status, the shown headers, body)."""
    where = urlsplit(base)
    connection = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=10)
    try:
        connection.request(method, target, headers=headers)
        response = connection.getresponse()
        shown = {k.lower(): v for k, v in response.getheaders() if k.lower() in SHOWN}
        return response.status, shown, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def envoys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Envoy]]:
    tmp = tmp_path_factory.mktemp("deny-with")
    door = f"127.0.0.1:{free_port()}"
    denial = PolicyHeaders.of(load_policy(str(POLICY))).denial
    assert set(denial) == {"location", "x-denied-by"}
    with Echo() as echo, Authz(POLICY, workers=1, extra=["--http-authz-address", door,
                                                        "--http-authz-prefix", "/authz"]) as authz:
        grpc = EnvoyOptions(shape="edge", authz=[authz.grpc_address], upstream=echo.address)
        http_ = EnvoyOptions(shape="edge", authz=[door], upstream=echo.address, protocol="http",
                             path_prefix="/authz", denial_headers=denial)
        (tmp / "grpc").mkdir()
        (tmp / "http").mkdir()
        with Envoy(tmp / "grpc", grpc) as via_grpc, Envoy(tmp / "http", http_) as via_http:
            yield {"grpc": via_grpc, "http": via_http}


def both(envoys: dict[str, Envoy], target: str, headers: dict[str, str],
         method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """The reply through each door; they must be the same, byte for byte,
    but for the request id each Envoy made (a UUID, shown as ``RID``)."""
    replies = {}
    for name, envoy in envoys.items():
        status, shown, body = fetch(envoy.url, target, headers, method)
        body = re.sub(UUID.pattern.encode(), b"RID", body)
        replies[name] = (status, {k: UUID.sub("RID", v) for k, v in shown.items()}, body)
    assert replies["grpc"] == replies["http"], replies
    return replies["grpc"]


def test_a_missing_credential_is_redirected_to_sign_in_with_the_original_url(envoys: dict[str, Envoy]) -> None:
    status, headers, body = both(envoys, "/api/orders?a=1&b=x y".replace(" ", "%20"), {"host": "shop.example"})
    assert status == 302
    assert headers["location"] == ("https://login.example.com/start?rd="
                                   "http%3A%2F%2Fshop.example%2Fapi%2Forders%3Fa%3D1%26b%3Dx%2520y")
    assert "www-authenticate" not in headers  # a 302 is no 401
    assert json.loads(body)["reason"] == "missing_credential"  # the default body with it
    # A bad credential too: unauthenticated is a missing or bad one.
    status, headers, _body = both(envoys, "/api/orders", {"host": "shop.example", "x-api-key": "wrong"})
    assert status == 302 and headers["location"].endswith("%2Fapi%2Forders")


def test_a_denial_by_a_rule_is_its_own_and_others_are_the_policys(envoys: dict[str, Envoy]) -> None:
    status, headers, body = both(envoys, "/admin/users?x=1", KEY)
    assert status == 404 and headers["content-type"] == "text/plain; charset=utf-8"
    assert body == b"nothing at /admin/users (RID)"
    status, headers, body = both(envoys, "/api/orders", KEY, method="DELETE")
    assert status == 403 and headers["x-denied-by"] == "no_permission"
    assert headers["content-type"] == "application/json" and headers["cache-control"] == "no-store"
    assert body == b'{"error":"forbidden","code":"no_permission","rule":"","request_id":"RID"}'


def test_what_authz_owns_keeps_the_default(envoys: dict[str, Envoy]) -> None:
    status, headers, body = both(envoys, "/api/a%2Fb", KEY)
    assert status == 403 and "x-denied-by" not in headers
    assert json.loads(body) == {"error": "forbidden", "reason": "invalid_path", "request_id": "RID"}
    for envoy in envoys.values():  # the control: the key allows
        assert fetch(envoy.url, "/api/orders", KEY)[0] == 200
