"""`authz test` with introspection issuers and data sources: each answered in
process by a stand-in, the server's own checks of the answer untouched, and
never a network connection: every endpoint of the policy is a local server
that counts what reaches it (testkit/endpoint.py) and must count nothing
(docs/policy.md, "Testing a policy"; docs/security.md 59)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.endpoint import Endpoint, Seen
from tests.unit.testing.cli import NOW_SECONDS, run


def answer_everything(seen: Seen) -> tuple[int, object]:
    """What a real endpoint would answer: were it asked, cases would pass."""
    return 200, {"active": True, "iss": "https://as.example.com", "aud": "orders-api", "sub": "acme",
                 "roles": ["orders-reader"], "tier": "gold", "left": 9}


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    with Endpoint(answer_everything) as server:
        yield server


def write_policy(tmp_path: Path, url: str) -> str:
    (tmp_path / "introspection.secret").write_text("s3cret\n")
    (tmp_path / "policy.yaml").write_text(f"""\
version: 1
issuers:
  - name: partners
    issuer: https://as.example.com
    audiences: [orders-api, billing-api]
    roles_claim: roles
    introspection:
      endpoint: {url}/introspect
      client_id: authz
      client_secret_file: introspection.secret
data:
  plans:
    url: {url}/plans/{{identity.subject}}
  quota:
    url: {url}/quota/{{identity.subject}}
    on_error: {{value: {{left: 0}}}}
  region:
    url: '{url}/region/{{request.headers["x-region"]}}'
response:
  headers:
    x-user-id: identity.subject
    x-token-kind: identity.kind
roles:
  orders-reader:
    - {{methods: [GET], paths: [/api/orders]}}
    - {{methods: [GET], paths: [/api/reports], when: 'data.plans.tier == "gold"'}}
    - {{methods: [POST], paths: [/api/orders], when: 'data.quota.left > 0'}}
    - {{methods: [GET], paths: [/api/regional], when: 'data.region == "eu"'}}
""")
    return str(tmp_path / "policy.yaml")


PARTNER = "{issuer: partners, claims: {sub: acme, roles: [orders-reader]}}"

INTROSPECTION_CASES = f"""\
cases:
  - name: an active token's answer gives the subject and roles
    request: {{method: GET, path: /api/orders}}
    token: {PARTNER}
    expect: {{allowed: true, status: 200, reason: allowed, rule: orders-reader,
             headers: {{x-user-id: acme, x-token-kind: introspected}}}}
  - name: an inactive token
    request: {{method: GET, path: /api/orders}}
    token: {{issuer: partners, active: false}}
    expect: {{allowed: false, status: 401, reason: inactive_token}}
  - name: an answer that names another audience
    request: {{method: GET, path: /api/orders}}
    token: {{issuer: partners, claims: {{sub: acme, roles: [orders-reader], aud: other-api}}}}
    expect: {{allowed: false, reason: invalid_token}}
  - name: another audience the issuer accepts
    request: {{method: GET, path: /api/orders}}
    token: {{issuer: partners, claims: {{sub: acme, roles: [orders-reader], aud: billing-api}}}}
    expect: {{allowed: true}}
  - name: an answer past its exp
    request: {{method: GET, path: /api/orders}}
    token: {{issuer: partners, claims: {{sub: acme, roles: [orders-reader], exp: {NOW_SECONDS - 1}}}}}
    expect: {{allowed: false, reason: expired_token}}
  - name: an answer not valid yet
    request: {{method: GET, path: /api/orders}}
    token: {{issuer: partners, claims: {{sub: acme, roles: [orders-reader], nbf: {NOW_SECONDS + 60}}}}}
    expect: {{allowed: false, reason: invalid_token}}
  - name: a refresh token is not an access token
    request: {{method: GET, path: /api/orders}}
    token: {{issuer: partners, claims: {{sub: acme, roles: [orders-reader], token_type: refresh_token}}}}
    expect: {{allowed: false, reason: invalid_token}}
  - name: an answer from another issuer
    request: {{method: GET, path: /api/orders}}
    token: {{issuer: partners, claims: {{sub: acme, roles: [orders-reader], iss: "https://evil.example.com"}}}}
    expect: {{allowed: false, reason: invalid_token}}
  - name: a claim given as null is left out of the answer
    request: {{method: GET, path: /api/orders}}
    token: {{issuer: partners, claims: {{sub: acme, roles: null}}}}
    expect: {{allowed: false, status: 403, reason: no_permission}}
"""

DATA_CASES = f"""\
cases:
  - name: a gold plan reads reports
    request: {{method: GET, path: /api/reports}}
    token: {PARTNER}
    data: {{plans: {{tier: gold}}}}
    expect: {{allowed: true, rule: orders-reader}}
  - name: a free plan does not
    request: {{method: GET, path: /api/reports}}
    token: {PARTNER}
    data: {{plans: {{tier: free}}}}
    expect: {{allowed: false, status: 403, reason: no_permission}}
  - name: a source the case does not give is an outage, denied
    request: {{method: GET, path: /api/reports}}
    token: {PARTNER}
    expect: {{allowed: false, reason: data_unavailable}}
  - name: a source given no answer by the case yields its on_error value
    request: {{method: POST, path: /api/orders}}
    token: {PARTNER}
    expect: {{allowed: false, reason: no_permission}}
  - name: the same source answered
    request: {{method: POST, path: /api/orders}}
    token: {PARTNER}
    data: {{quota: {{left: 3}}}}
    expect: {{allowed: true}}
  - name: any JSON value is an answer
    request: {{method: GET, path: /api/regional, headers: {{x-region: eu-west}}}}
    token: {PARTNER}
    data: {{region: eu}}
    expect: {{allowed: true}}
  - name: a URL the request cannot fill fails as in the server, answer or not
    request: {{method: GET, path: /api/regional}}
    token: {PARTNER}
    data: {{region: eu}}
    expect: {{allowed: false, reason: data_unavailable}}
"""


@pytest.mark.parametrize("cases", [INTROSPECTION_CASES, DATA_CASES], ids=["introspection", "data"])
def test_outside_calls_are_answered_in_process_and_nothing_is_called(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, endpoint: Endpoint, cases: str) -> None:
    code, out, err = run(capsys, tmp_path, write_policy(tmp_path, endpoint.url), cases)
    assert (code, out, err) == (0, [f"{cases.count('- name:')} passed, 0 failed"], "")
    assert endpoint.count() == 0


def test_a_case_that_expects_what_the_answer_does_not_give_fails(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, endpoint: Endpoint) -> None:
    cases = f"""\
cases:
  - name: an inactive token is not allowed
    request: {{method: GET, path: /api/orders}}
    token: {{issuer: partners, active: false}}
    expect: {{allowed: true}}
  - name: a free plan is not gold
    request: {{method: GET, path: /api/reports}}
    token: {PARTNER}
    data: {{plans: {{tier: free}}}}
    expect: {{allowed: true}}
"""
    code, out, _err = run(capsys, tmp_path, write_policy(tmp_path, endpoint.url), cases)
    assert code == 1
    assert out[-1] == "0 passed, 2 failed"
    assert "  decision: DENY 401 inactive_token" in out
    assert "  decision: DENY 403 no_permission" in out
    assert endpoint.count() == 0


@pytest.mark.parametrize(("case", "expected"), [
    pytest.param("    token: {issuer: partners, active: false, claims: {sub: acme}}\n",
                 ["{f}:4: cases[0].token.claims: an inactive token's introspection answer is 'active: false' "
                  "alone: give no claims"], id="inactive-claims"),
    pytest.param("    token: {issuer: partner, claims: {sub: acme}}\n",
                 ["{f}:4: cases[0].token.issuer: no issuer named 'partner' (the policy has: partners)"],
                 id="issuer"),
    pytest.param("    data: {plans: {tier: gold}, plan: {tier: gold}}\n",
                 ["{f}:4: cases[0].data.plan: no data source named 'plan' (the policy has: plans, quota, region)"],
                 id="data-name"),
    pytest.param("    data: {plans: {since: 2026-01-01}}\n",
                 ["{f}:4: cases[0].data.plans: a data source answers a JSON value (quote a date or time)"],
                 id="data-date"),
])
def test_a_bad_token_or_data_is_file_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                     endpoint: Endpoint, case: str, expected: list[str]) -> None:
    cases = "cases:\n  - name: x\n    request: {path: /api/orders}\n" + case + "    expect: {allowed: true}\n"
    code, out, err = run(capsys, tmp_path, write_policy(tmp_path, endpoint.url), cases)
    assert (code, out) == (2, [])
    assert err.splitlines() == [line.format(f=tmp_path / "cases.yaml") for line in expected]
    assert endpoint.count() == 0
