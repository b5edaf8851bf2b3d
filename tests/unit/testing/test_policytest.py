"""`authz test` in-process: case files, stand-in credentials, the clock,
expectations, the report, exit codes and coverage (docs/policy.md,
"Testing a policy"; docs/security.md 59)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from authz.cli import main
from authz.config import load_policy
from authz.engine import Engine
from authz.policy import Policy
from authz.testing.runner import FixedClock
from authz.testing.standin import StandInKeys, stand_in
from testkit.idp import FakeIdP, remote_issuer_policy
from testkit.paths import EXAMPLES
from testkit.requests import request
from testkit.tokens import claims, token

NOW = "2026-01-01T00:00:00Z"
NOW_SECONDS = 1767225600
POLICY = str(EXAMPLES / "policy.yaml")


def run(capsys: pytest.CaptureFixture[str], tmp_path: Path, cases: str, *extra: str,
        config: str = POLICY) -> tuple[int, list[str], str]:
    path = tmp_path / "cases.yaml"
    path.write_text(textwrap.dedent(cases))
    code = main(["test", "--config", config, "--now", NOW, *extra, str(path)])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


READER = """\
cases:
  - name: reader lists orders
    request: {method: GET, path: /api/orders, host: shop.example.com}
    token: {issuer: dev, claims: {sub: alice, roles: [orders-reader]}}
    expect: {allowed: true, status: 200, reason: allowed, rule: orders-reader, headers: {x-user-id: alice}}
"""


def test_passing_cases_exit_0_with_the_closing_line_alone(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, tmp_path, READER)
    assert (code, out, err) == (0, ["1 passed, 0 failed"], "")


def test_a_failing_case_is_named_with_what_came_instead(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cases = READER + """\
  - name: reader deletes
    request: {method: DELETE, path: /api/orders/1}
    token: {issuer: dev, claims: {sub: alice, roles: [orders-reader]}}
    expect: {allowed: true, rule: null, headers: {x-user-id: alice, x-identity-token: {present: true}}}
"""
    code, out, _err = run(capsys, tmp_path, cases)
    assert code == 1
    assert out == [
        f"FAIL reader deletes ({tmp_path}/cases.yaml:6)",
        "  allowed: expected true, got false",
        "  header x-user-id: expected 'alice', got nothing (not set)",
        "  header x-identity-token: expected it set, got nothing",
        "  decision: DENY 403 no_permission",
        "1 passed, 1 failed",
    ]


def test_headers_that_vary_are_checked_by_presence_or_by_claims(capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path) -> None:
    cases = """\
cases:
  - name: identity token claims
    request: {method: GET, path: /api/orders}
    token: {issuer: dev, claims: {sub: alice, roles: [orders-reader]}}
    expect:
      headers:
        x-identity-token: {claims: {sub: alice, kind: jwt, iat: IAT, exp: EXP}}
        x-user-roles: {present: true}
        authorization: {present: false}
  - name: wrong claim
    request: {method: GET, path: /api/orders}
    token: {issuer: dev, claims: {sub: alice, roles: [orders-reader]}}
    expect: {headers: {x-identity-token: {claims: {sub: bob, tenant: acme}}, x-user-id: {present: false}}}
""".replace("IAT", str(NOW_SECONDS)).replace("EXP", str(NOW_SECONDS + 60))
    code, out, _err = run(capsys, tmp_path, cases)
    assert code == 1
    assert out[1:3] == [
        "  header x-identity-token: sub: expected bob, got alice; tenant: expected acme, got (absent)",
        "  header x-user-id: expected it not set, got 'alice'",
    ]
    assert out[-1] == "1 passed, 1 failed"


def test_now_is_the_clock_of_every_decision(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cases = """\
cases:
  - name: expires at the turn of the year
    request: {method: GET, path: /api/orders}
    token: {issuer: dev, claims: {sub: alice, roles: [orders-reader], iat: IAT, exp: EXP}}
    expect: {allowed: true}
""".replace("IAT", str(NOW_SECONDS - 600)).replace("EXP", str(NOW_SECONDS + 10))
    assert run(capsys, tmp_path, cases)[0] == 0
    path = tmp_path / "cases.yaml"
    # 31 s past exp: beyond the issuer's 30 s leeway.
    assert main(["test", "--config", POLICY, "--now", str(NOW_SECONDS + 41), str(path)]) == 1
    capsys.readouterr()
    # Before exp (past it, only the leeway would accept the token, and the example policy signs an identity
    # token, which no credential accepted only within the leeway may yield: docs/security.md 45).
    assert main(["test", "--config", POLICY, "--now", "2026-01-01T00:00:09+00:00", str(path)]) == 0
    capsys.readouterr()
    assert main(["test", "--config", POLICY, "--now", "2026-01-01T00:00:41Z", str(path)]) == 1
    assert "  reason" not in capsys.readouterr().out  # only `allowed` was expected


@pytest.mark.parametrize("now", ["yesterday", "2026-01-01T00:00:00"])
def test_a_bad_now_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path, now: str) -> None:
    path = tmp_path / "cases.yaml"
    path.write_text(READER)
    assert main(["test", "--config", POLICY, "--now", now, str(path)]) == 2
    assert capsys.readouterr().err.startswith("authz test: --now ")


@pytest.mark.parametrize(("cases", "expected"), [
    pytest.param("cases:\n  - name: x\n    request: {path: /a}\n    expect: {alowed: true}\n",
                 ["{f}:4: cases[0].expect.alowed: unknown field (did you mean 'allowed'?)"], id="unknown-field"),
    pytest.param("cases:\n  - name: x\n    request: {path: /a}\n    token: {issuer: corp}\n    expect: {allowed: "
                 "true}\n",
                 ["{f}:4: cases[0].token.issuer: no issuer named 'corp' (the policy has: dev)"], id="issuer"),
    pytest.param("cases:\n  - name: x\n    request: {path: /a}\n    token: {issuer: dev, active: false}\n    expect: "
                 "{allowed: false}\n",
                 ["{f}:4: cases[0].token.active: issuer 'dev' verifies JWTs: 'active' is for an introspection "
                  "issuer's token (an expired JWT: give exp)"], id="active-jwt"),
    pytest.param("cases:\n  - name: x\n    request: {path: /a}\n    data: {plans: {tier: gold}}\n    expect: "
                 "{allowed: true}\n",
                 ["{f}:4: cases[0].data.plans: no data source named 'plans' (the policy has: none)"], id="data"),
    pytest.param("cases:\n  - name: x\n    request: {path: /a}\n    api_key: acme\n    expect: {allowed: true}\n",
                 ["{f}:4: cases[0].api_key: no API key with subject 'acme' (the policy has: partner-demo)"],
                 id="api-key"),
    pytest.param("cases:\n  - name: x\n    request: {path: /a}\n    expect: {reason: nope, rule: nope}\n",
                 ["{f}:4: cases[0].expect.reason: unknown reason code 'nope'",
                  "{f}:4: cases[0].expect.rule: the policy has no rule or role named 'nope'"], id="names"),
    pytest.param("cases:\n  - name: x\n    request: {path: /a}\n    expect: {}\n",
                 ["{f}:4: cases[0].expect: expect nothing: give allowed, status, reason, rule or headers"], id="empty"),
    pytest.param("cases:\n  - name: x\n    request: {path: /a}\n    expect: {headers: {a: {present: true, claims: "
                 "{}}}}\n",
                 ["{f}:4: cases[0].expect.headers.a: give a value, or exactly one of 'present' or 'claims'"],
                 id="header-check"),
    pytest.param("cases:\n  - name: x\n    request: {path: /a}\n    expect: {allowed: true}\n"
                 "  - name: x\n    request: {path: /b}\n    expect: {allowed: true}\n",
                 ["{f}:5: case name 'x' is used before, at {f}:2"], id="duplicate-name"),
    pytest.param("cases:\n  - name: x\n    request: {path: a}\n    expect: {allowed: true}\n",
                 ["{f}:3: cases[0].request.path: a request path starts with '/'"], id="path"),
    pytest.param("cases:\n  - name: x\n    request: {path: /a}\n    token: {issuer: dev, claims: {exp: 2026-01-01}}\n"
                 "    expect: {allowed: true}\n",
                 ["{f}:4: cases[0].token.claims: claims must be JSON values (quote a date or time: '2026-01-01', "
                  "or give exp and iat as Unix seconds)"], id="claims-date"),
    pytest.param("cases:\n  - name: x\n    request: {path: /a}\n    expect: {status: 500}\n",
                 ["{f}:4: cases[0].expect.status: a decision's status is 200, 401 or 403 (or a policy's deny_with "
                  "status: a 4xx or a redirect)"], id="status"),
    pytest.param("cases: []\n", ["{f}:1: cases: no cases: a case file tests at least one request"], id="no-cases"),
    pytest.param("cases: [\n",
                 ["{f}:2: invalid YAML: expected the node content, but found '<stream end>' (while parsing a flow node "
                  "at line 2)"], id="yaml"),
])
def test_a_case_file_error_is_file_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, cases: str,
                                                   expected: list[str]) -> None:
    code, out, err = run(capsys, tmp_path, cases)
    assert (code, out) == (2, [])
    assert err.splitlines() == [line.format(f=tmp_path / "cases.yaml") for line in expected]


def test_expectations_name_the_status_a_policys_deny_with_gives(capsys: pytest.CaptureFixture[str]) -> None:
    fixtures = Path(__file__).resolve().parents[2] / "fixtures" / "deny_with"
    assert main(["test", "--config", str(fixtures / "policy.yaml"), str(fixtures / "cases.yaml")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "4 passed, 0 failed"


def test_a_policy_error_is_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 2\n")
    code, out, err = run(capsys, tmp_path, READER, config=str(policy))
    assert (code, out) == (2, [])
    assert err == f"{policy}:1: version: unsupported policy version 2: this authz reads version 1\n"


def test_api_keys_by_subject_and_peers_by_principal(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cases = """\
cases:
  - name: partner key
    request: {method: GET, path: /api/orders}
    api_key: partner-demo
    expect: {allowed: true, rule: orders-reader, headers: {x-user-id: partner-demo}}
  - name: the real key still works
    request: {method: GET, path: /api/orders, headers: {X-Api-Key: demo-key-0123456789}}
    expect: {allowed: true, headers: {x-user-id: partner-demo}}
  - name: billing peer
    request: {method: GET, path: /api/orders, source: {address: 10.0.0.1, principal: "spiffe://cluster.local/ns/shop/sa/billing"}}
    expect: {allowed: true, rule: orders-reader}
  - name: unknown peer
    request: {method: GET, path: /api/orders, source: {principal: "spiffe://cluster.local/ns/shop/sa/web"}}
    expect: {allowed: false, status: 401}
"""
    assert run(capsys, tmp_path, cases)[:2] == (0, ["4 passed, 0 failed"])


def test_coverage_lists_what_no_case_matched(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    report = tmp_path / "coverage.json"
    code, out, _err = run(capsys, tmp_path, READER, "--coverage", "--coverage-json", str(report))
    assert code == 0
    assert out == [
        "coverage: 1 of 4 rules and role permissions matched by a case",
        f"  {POLICY}: 1 of 4",
        f"    {POLICY}:30: permission orders-admin[0] not matched by any case",
        f"    {POLICY}:33: rule public not matched by any case",
        f"    {POLICY}:37: rule tenant-isolation not matched by any case",
        "1 passed, 0 failed",
    ]
    data = json.loads(report.read_text())
    assert data["total"] == 4 and data["matched"] == 1
    assert [item["name"] for item in data["files"][0]["unmatched"]] == ["orders-admin[0]", "public", "tenant-isolation"]


def test_coverage_is_per_file_in_a_policy_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    report = tmp_path / "coverage.json"
    directory = str(EXAMPLES / "policy-dir")
    code, out, _err = run(capsys, tmp_path, READER.replace("orders-reader, headers: {x-user-id: alice}",
                                                           "orders-reader"),
                          "--coverage-json", str(report), config=directory)
    assert (code, out) == (0, ["1 passed, 0 failed"])
    files = {f["file"]: f for f in json.loads(report.read_text())["files"]}
    orders = files[f"{directory}/teams/orders.yaml"]
    assert (orders["team"], orders["total"], orders["matched"]) == ("orders", 3, 1)
    assert files[f"{directory}/policy.yaml"]["team"] is None
    assert files[f"{directory}/teams/payments.yaml"]["matched"] == 0


def test_a_remote_issuer_is_tested_offline() -> None:
    with FakeIdP() as idp:
        policy = load_policy_text(remote_issuer_policy(idp))
        stand_ins = stand_in(policy)
        minted = stand_ins.mint("remote", {"sub": "alice", "groups": ["orders-reader"]}, NOW_SECONDS)
        engine = Engine(stand_ins.policy, clock=FixedClock(NOW_SECONDS))
        assert engine.decide(request(bearer=minted)).allowed
        assert sum(idp.hits.values()) == 0  # no key set, no discovery document


def test_sec_59_the_stand_in_verifies_only_its_own_tokens() -> None:
    """The stand-in replaces the keys, not the checks: a token signed by any
    other key, or forged with alg none, is still refused."""
    with FakeIdP() as idp:
        stand_ins = stand_in(load_policy_text(remote_issuer_policy(idp)))
        engine = Engine(stand_ins.policy, clock=FixedClock(NOW_SECONDS))
        body = claims(iss=idp.issuer, iat=NOW_SECONDS, exp=NOW_SECONDS + 60)
        other = token(body, kid="authz-test-stand-in")
        assert engine.decide(request(bearer=other)).reason.value == "invalid_token"
        unsigned = other.rsplit(".", 1)[0] + "."
        assert engine.decide(request(bearer=unsigned)).reason.value == "invalid_token"
        good = stand_ins.mint("remote", body, NOW_SECONDS)
        assert engine.decide(request(bearer=good)).allowed  # the positive control
        assert isinstance(stand_ins.issuers["remote"].keys, StandInKeys)


@pytest.mark.parametrize("algorithms", [["ES384"], ["EdDSA"], ["PS256"], ["RS256"]])
def test_a_stand_in_signs_with_an_algorithm_the_issuer_allows(algorithms: list[str]) -> None:
    with FakeIdP() as idp:
        text = remote_issuer_policy(idp).replace("algorithms: [RS256]", f"algorithms: {algorithms}")
        stand_ins = stand_in(load_policy_text(text))
        minted = stand_ins.mint("remote", {"groups": ["orders-reader"]}, NOW_SECONDS)
        assert json.loads(_b64(minted.split(".")[0]))["alg"] == algorithms[0]
        assert Engine(stand_ins.policy, clock=FixedClock(NOW_SECONDS)).decide(request(bearer=minted)).allowed


def test_an_hmac_issuer_and_a_cookie_location(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "secret.jwks.json").write_text(json.dumps({"keys": [
        {"kty": "oct", "kid": "s1", "alg": "HS256", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0"}]}))
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent("""\
        version: 1
        issuers:
          - {name: web, issuer: https://web.example, audiences: [web], jwks_file: secret.jwks.json,
             algorithms: [HS256], from: [{cookie: session}], token_types: [at+jwt]}
        roles:
          user: [{paths: ["/**"]}]
        """))
    cases = """\
cases:
  - name: the session cookie
    request: {path: /x, headers: {cookie: theme=dark}}
    token: {issuer: web, claims: {roles: [user]}}
    expect: {allowed: true, rule: user}
"""
    assert run(capsys, tmp_path, cases, config=str(policy))[:2] == (0, ["1 passed, 0 failed"])


def _b64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_policy_text(text: str) -> Policy:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "policy.yaml"
        path.write_text(text)
        return load_policy(str(path))
