"""Real HTTP through a real Envoy (edge shape, as Emissary generates it) to authz."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator

import jwt
import pytest

from authz.tools.envoy_config import EnvoyOptions
from testkit.paths import ACCEPTANCE
from testkit.procs import Authz, Echo, Envoy, http_get
from testkit.tokens import claims, token


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Authz, Envoy]]:
    tmp = tmp_path_factory.mktemp("edge")
    # Envoy lists each worker's own port as an endpoint and balances requests
    # over them; a shared SO_REUSEPORT port spreads connections, of which
    # Envoy opens only one per worker thread.
    with Echo() as echo, Authz(ACCEPTANCE / "policy.yaml", workers=2, worker_ports=True) as authz, \
            Envoy(tmp, EnvoyOptions(shape="edge", authz=authz.worker_addresses, upstream=echo.address)) as envoy:
        yield authz, envoy


def _ext_authz(envoy: Envoy) -> dict[str, int]:
    stats = envoy.stats()
    return {k.rsplit(".", 1)[-1]: v for k, v in stats.items() if k.startswith("http.ingress_http.ext_authz.")}


def test_valid_token_reaches_upstream_with_verified_identity(stack: tuple[Authz, Envoy]) -> None:
    authz, envoy = stack
    bearer = token(claims(sub="alice"))
    status, _headers, body = http_get(envoy.url + "/api/orders/7", {
        "authorization": f"Bearer {bearer}",
        "x-tenant": "t1",
        # Forged by the client: authz's answer must replace or strip these.
        "x-user-id": "root",
        "x-identity-token": "forged",
        "x_user_id": "root",  # the underscore twin WSGI/Rack upstreams read as x-user-id
    })
    assert status == 200, body
    seen = json.loads(body)["headers"]
    assert seen["x-user-id"] == "alice" and "x_user_id" not in seen
    assert "authorization" not in seen  # response.remove
    identity_token = seen["x-identity-token"]
    assert identity_token != "forged"
    _s, _h, jwks = authz.get("/.well-known/jwks.json")
    keys = {k["kid"]: k for k in json.loads(jwks)["keys"]}
    kid = jwt.get_unverified_header(identity_token)["kid"]
    verified = jwt.decode(identity_token, jwt.PyJWK(keys[kid]).key, algorithms=["ES256"], audience="internal",
                          issuer="https://authz.example.internal")
    assert verified["sub"] == "alice" and verified["roles"] == ["orders-reader"]


def test_no_token_is_401_with_challenge(stack: tuple[Authz, Envoy]) -> None:
    _authz, envoy = stack
    status, headers, body = http_get(envoy.url + "/api/orders")
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    assert json.loads(body)["reason"] == "missing_credential"


def test_forbidden_is_403_with_json_body(stack: tuple[Authz, Envoy]) -> None:
    _authz, envoy = stack
    status, headers, body = http_get(envoy.url + "/api/orders", {"authorization": f"Bearer {token(claims())}",
                                                                  "x-tenant": "t1"}, method="POST")
    assert status == 403
    assert headers["content-type"] == "application/json"
    document = json.loads(body)
    assert document["error"] == "forbidden" and document["reason"] == "no_permission"
    assert document["request_id"]  # Envoy's x-request-id, echoed for support
    assert "www-authenticate" not in headers


def test_bypass_route_skips_ext_authz(stack: tuple[Authz, Envoy]) -> None:
    _authz, envoy = stack
    before = _ext_authz(envoy)
    status, _headers, _body = http_get(envoy.url + "/.well-known/anything")
    assert status == 200
    assert _ext_authz(envoy) == before


def test_envoy_stats_confirm_checks_ran(stack: tuple[Authz, Envoy]) -> None:
    _authz, envoy = stack
    before = _ext_authz(envoy)
    assert http_get(envoy.url + "/api/orders/1",
                    {"authorization": f"Bearer {token(claims())}", "x-tenant": "t1"})[0] == 200
    assert http_get(envoy.url + "/api/orders/1")[0] == 401
    assert http_get(envoy.url + "/api/orders/1", {"authorization": "Bearer not-a-token"})[0] == 401
    after = _ext_authz(envoy)
    assert after.get("ok", 0) - before.get("ok", 0) == 1
    assert after.get("denied", 0) - before.get("denied", 0) == 2
    assert after.get("error", 0) == 0 and after.get("failure_mode_allowed", 0) == 0


def test_both_workers_answer_checks_sent_through_one_envoy(stack: tuple[Authz, Envoy]) -> None:
    authz, envoy = stack
    bearer = token(claims())
    headers = {"authorization": f"Bearer {bearer}", "x-tenant": "t1"}

    def one(i: int) -> int:
        return http_get(envoy.url + f"/api/orders/{i}", headers)[0]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(one, range(400)))
    assert statuses.count(200) == 400
    _s, _h, body = authz.get("/readyz")
    workers = json.loads(body)["workers"]
    assert len(workers) == 2
    assert all(w["decisions"] > 0 for w in workers), workers
