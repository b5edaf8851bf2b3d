"""Bypass classes closed, through real Envoy and both doors (docs/security.md 45, 46, 48, 49, 50, 51)."""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.tools.envoy_config import EnvoyOptions
from testkit.paths import ACCEPTANCE
from testkit.procs import Authz, Echo, Envoy, free_port, http_get
from testkit.tokens import claims, token

pytestmark = pytest.mark.integration

EXTRA_RULES = """rules:
  - {name: reports, effect: allow, paths: [/reports], anonymous: true, when: 'request.query.tenant == "t1"'}
  - {name: no-t2, effect: deny, paths: [/healthz], when: 'request.query.tenant == "t2"'}
  - {name: open, effect: allow, paths: ["/open/**"], anonymous: true}
  - {name: no-open-admin, effect: deny, paths: ["/open/admin/**"]}
  - {name: hostile, effect: deny, paths: ["/open/files/*a*a*a*a*b", "/open/**/a/**/b/**/c"]}
"""


def _stack(door_kind: str, tmp: Path, policy_tail: str = "") -> Iterator[Envoy]:
    """Echo behind Envoy (the edge shape) calling authz's ``door_kind`` door,
    on the acceptance policy with EXTRA_RULES and ``policy_tail`` added."""
    for name in ("policy.yaml", "corp.jwks.json", "identity-es256.pem"):
        shutil.copy(ACCEPTANCE / name, tmp / name)
    policy = tmp / "policy.yaml"
    policy.write_text(policy.read_text().replace("rules:\n", EXTRA_RULES, 1) + policy_tail)
    door = f"127.0.0.1:{free_port()}"
    extra = ["--http-authz-address", door, "--http-authz-prefix", "/authz", "--trusted-forwarded-hops", "1"]
    with Echo() as echo, Authz(policy, workers=1, extra=extra) as authz:
        options = EnvoyOptions(shape="edge", authz=[authz.grpc_address if door_kind == "grpc" else door],
                               upstream=echo.address, protocol=door_kind, path_prefix="/authz")
        with Envoy(tmp, options) as proxy:
            yield proxy


@pytest.fixture(scope="module", params=["grpc", "http"])
def envoy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    yield from _stack(request.param, tmp_path_factory.mktemp(f"bypass-{request.param}"))


@pytest.fixture(scope="module", params=["grpc", "http"])
def lenient_envoy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    """As ``envoy``, for an upstream that uses matrix parameters and ignores case."""
    tmp = tmp_path_factory.mktemp(f"lenient-{request.param}")
    yield from _stack(request.param, tmp, "\npaths:\n  matrix_parameters: strip\n  case_sensitive: false\n")


def _get(envoy: Envoy, path: str) -> tuple[int, str]:
    """(status, reason) of a GET through Envoy; the reason of a 200 is "allowed"."""
    status, _headers, body = http_get(envoy.url + path)
    return status, json.loads(body)["reason"] if status != 200 else "allowed"


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
    status, _headers, body = http_get(envoy.url + "/api/orders/1",
                                      {"authorization": f"Bearer {bearer}", "x-tenant": "t1"})
    assert status == 200, body
    identity_token = json.loads(body)["headers"]["x-identity-token"]
    payload = identity_token.split(".")[1]
    issued = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert issued["exp"] <= expires  # the user's own exp: the leeway is for accepting, never for asserting
    assert issued["exp"] < issued["iat"] + 60


def test_a_token_accepted_only_within_the_leeway_gets_no_identity_token(envoy: Envoy) -> None:
    now = int(time.time())
    # Expired 5 s ago by authz's clock, inside the issuer's 30 s leeway.
    bearer = token(claims(exp=now - 5, iat=now - 600))
    headers = {"authorization": f"Bearer {bearer}", "x-tenant": "t1"}
    for _ in range(2):  # never a cached allow either
        status, answer, body = http_get(envoy.url + "/api/orders/1", headers)
        assert status == 401, body
        assert json.loads(body)["reason"] == "credential_in_leeway"
        assert 'error_description="credential_in_leeway"' in answer["www-authenticate"]
    # The control: the same caller with a live token is allowed and gets its identity token.
    live = token(claims(exp=now + 300, iat=now - 600))
    status, _answer, body = http_get(envoy.url + "/api/orders/1", {**headers, "authorization": f"Bearer {live}"})
    assert status == 200 and json.loads(body)["headers"]["x-identity-token"].count(".") == 2, body
    # Past the leeway it is the ordinary expiry.
    gone = token(claims(exp=now - 60, iat=now - 600))
    status, _answer, body = http_get(envoy.url + "/api/orders/1", {**headers, "authorization": f"Bearer {gone}"})
    assert status == 401 and json.loads(body)["reason"] == "expired_token", body


@pytest.mark.parametrize("host", ["api.example.com:80:80", "x@api.example.com"])
def test_an_odd_authority_never_reaches_a_public_route(envoy: Envoy, host: str) -> None:
    assert http_get(envoy.url + "/healthz?tenant=t1", {"host": "api.example.com"})[0] == 200  # the control
    status, _headers, body = http_get(envoy.url + "/healthz?tenant=t1", {"host": host})
    # Envoy passes such an authority on; authz refuses it before any rule.
    assert status == 403 and json.loads(body)["reason"] == "invalid_request", (status, body)



@pytest.mark.parametrize("path", [
    "/open/admin;x/users", "/open;x/admin/users", "/open/admin/users;jsessionid=1", "/open/;x/admin",
    "/open/admin;/users", "/open/admin%3Bx/users", "/open/admin%3bx/users", "/open/x;y",
])
def test_a_path_parameter_is_refused_wherever_it_is(envoy: Envoy, path: str) -> None:
    assert _get(envoy, "/open/x") == (200, "allowed")  # the controls
    assert _get(envoy, "/open/admin/users") == (403, "denied_by_rule")
    # Envoy passes ';' and '%3B' on as they are; authz refuses them before any rule.
    assert _get(envoy, path) == (403, "invalid_path")


def test_envoy_resolves_dot_segments_before_authz_sees_parameters(envoy: Envoy) -> None:
    # normalize_path in the generated config removes '/x;y/..' first, so
    # authz sees /open/admin/users and the deny rule matches it.
    assert _get(envoy, "/open/x;y/../admin/users") == (403, "denied_by_rule")


def test_with_matrix_parameters_stripped_the_deny_rule_still_matches(lenient_envoy: Envoy) -> None:
    status, _headers, body = http_get(lenient_envoy.url + "/open/x;v=1")
    assert status == 200, body
    assert json.loads(body)["path"] == "/open/x;v=1"  # the upstream still gets its parameters
    for path in ("/open/admin;x/users", "/open;x/admin/users", "/open/admin/users;jsessionid=1", "/open/;x/admin"):
        assert _get(lenient_envoy, path) == (403, "denied_by_rule"), path
    assert _get(lenient_envoy, "/open/admin%3Bx/users") == (403, "invalid_path")


def test_case_matters_as_written(envoy: Envoy) -> None:
    # /open/ADMIN is another path: the allow rule covers it, the deny rule does not.
    assert _get(envoy, "/open/ADMIN/users") == (200, "allowed")
    assert _get(envoy, "/open/admin/") == (403, "denied_by_rule")  # '/**' covers the trailing slash


def test_case_is_folded_when_the_policy_says_the_upstream_ignores_it(lenient_envoy: Envoy) -> None:
    # Every rule sees the path lower-cased.
    for path in ("/open/ADMIN/users", "/OPEN/Admin", "/Open/admin/"):
        assert _get(lenient_envoy, path) == (403, "denied_by_rule"), path
    assert _get(lenient_envoy, "/OPEN/x") == (200, "allowed")


def test_hostile_globs_decide_at_once_and_long_paths_are_refused(envoy: Envoy) -> None:
    # Near misses of the 'hostile' deny rule's globs, just under the 8192
    # character limit: a backtracking matcher would not answer these for
    # hours (http_get gives up after 10 s).
    assert _get(envoy, "/open/files/" + "a" * 8100) == (200, "allowed")
    assert _get(envoy, "/open" + "/a/b" * 2040) == (200, "allowed")
    assert _get(envoy, "/open/files/" + "a" * 8100 + "b") == (403, "denied_by_rule")
    assert _get(envoy, "/open" + "/a/b" * 2040 + "/c") == (403, "denied_by_rule")
    # Over the limit: refused before any rule, whatever it would have matched.
    assert _get(envoy, "/open/" + "a" * 8200) == (403, "invalid_path")
