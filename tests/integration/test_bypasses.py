"""Bypass classes closed, through real Envoy and both doors (docs/security.md 45, 46, 48)."""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Iterator

import pytest

from authz.tools.envoy_config import EnvoyOptions
from testkit.paths import ACCEPTANCE
from testkit.procs import Authz, Echo, Envoy, free_port, http_get
from testkit.tokens import claims, token

pytestmark = pytest.mark.integration

EXTRA_RULES = """rules:
  - {name: reports, effect: allow, paths: [/reports], anonymous: true, when: 'request.query.tenant == "t1"'}
  - {name: no-t2, effect: deny, paths: [/healthz], when: 'request.query.tenant == "t2"'}
"""


@pytest.fixture(scope="module", params=["grpc", "http"])
def envoy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    tmp = tmp_path_factory.mktemp(f"bypass-{request.param}")
    for name in ("policy.yaml", "corp.jwks.json", "identity-es256.pem"):
        shutil.copy(ACCEPTANCE / name, tmp / name)
    policy = tmp / "policy.yaml"
    policy.write_text(policy.read_text().replace("rules:\n", EXTRA_RULES, 1))
    door = f"127.0.0.1:{free_port()}"
    extra = ["--http-authz-address", door, "--http-authz-prefix", "/authz", "--trusted-forwarded-hops", "1"]
    with Echo() as echo, Authz(policy, workers=1, extra=extra) as authz:
        options = EnvoyOptions(shape="edge", authz=[authz.grpc_address if request.param == "grpc" else door],
                               upstream=echo.address, protocol=request.param, path_prefix="/authz")
        with Envoy(tmp, options) as proxy:
            yield proxy


def test_a_repeated_query_parameter_fails_closed(envoy: Envoy) -> None:
    assert http_get(envoy.url + "/reports?tenant=t1")[0] == 200
    status, _headers, body = http_get(envoy.url + "/reports?tenant=t1&tenant=t2")
    assert status == 401 and json.loads(body)["reason"] == "missing_credential"  # the allow rule did not match
    assert http_get(envoy.url + "/healthz?tenant=t1")[0] == 200
    status, _headers, body = http_get(envoy.url + "/healthz?tenant=t1&tenant=t1")
    assert status == 403 and json.loads(body)["reason"] == "denied_by_rule"  # the deny rule matched


def test_the_identity_token_never_outlives_the_users_token(envoy: Envoy) -> None:
    expires = int(time.time()) + 25  # sooner than the identity token's 60 s
    bearer = token(claims(exp=expires))
    status, _headers, body = http_get(envoy.url + "/api/orders/1", {"authorization": f"Bearer {bearer}", "x-tenant": "t1"})
    assert status == 200, body
    identity_token = json.loads(body)["headers"]["x-identity-token"]
    payload = identity_token.split(".")[1]
    issued = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert issued["exp"] <= expires + 30  # the user's exp plus the issuer's leeway, never iat + 60
    assert issued["exp"] < issued["iat"] + 60


@pytest.mark.parametrize("host", ["api.example.com:80:80", "x@api.example.com"])
def test_an_odd_authority_never_reaches_a_public_route(envoy: Envoy, host: str) -> None:
    assert http_get(envoy.url + "/healthz?tenant=t1", {"host": "api.example.com"})[0] == 200  # the control
    status, _headers, body = http_get(envoy.url + "/healthz?tenant=t1", {"host": host})
    # Envoy passes such an authority on; authz refuses it before any rule.
    assert status == 403 and json.loads(body)["reason"] == "invalid_request", (status, body)
