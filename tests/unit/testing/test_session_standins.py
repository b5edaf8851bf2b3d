"""`authz test` with browser sessions: each case's session cookie is sealed
for its claims with a key made for the run, which the stand-in policy's
login opens in place of its keys file; the provider's discovery is held
in process, so a navigation without a session is sent to sign in with
nothing fetched: the issuer is a local server that counts what reaches it
and must count nothing (docs/policy.md, "Testing a policy";
docs/security.md 59)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.config.load import load_policy
from authz.login.session import seal_session
from testkit.endpoint import Endpoint, Seen
from tests.unit.testing.cli import NOW_SECONDS, run

HOUR = 3600


@pytest.fixture
def provider() -> Iterator[Endpoint]:
    """What the provider would answer (discovery, keys): were it asked, a flow could go on."""
    def answer(seen: Seen) -> tuple[int, object]:
        if seen.path.endswith("/openid-configuration"):
            return 200, {"issuer": server.url, "authorization_endpoint": f"{server.url}/authorize",
                         "token_endpoint": f"{server.url}/token", "jwks_uri": f"{server.url}/jwks"}
        return 200, {"keys": []}

    with Endpoint(answer) as server:
        yield server


def write_policy(tmp_path: Path, issuer: str) -> str:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    (tmp_path / "session.keys").write_text(f"{key}\n")
    (tmp_path / "policy.yaml").write_text(f"""\
version: 1
issuers:
  - name: corp
    issuer: {issuer}
    audiences: [orders-api]
    roles_claim: groups
    login:
      client_id: shop-web
      paths: ["/app/**"]
      session:
        ttl: 1h
        keys_file: session.keys
  - name: partners
    issuer: https://partners.example.com
    audiences: [orders-api]
    jwks_uri: https://partners.example.com/jwks
roles:
  staff:
    - {{methods: [GET, HEAD], paths: ["/app/**"]}}
response:
  headers:
    x-user: identity.subject
    x-email: identity.claims.email
""")
    return str(tmp_path / "policy.yaml")


NAVIGATION = "{method: GET, path: /app/orders, host: shop.example.com, headers: {accept: text/html}}"
API = "{method: GET, path: /app/orders, host: shop.example.com}"

CASES = f"""\
cases:
  - name: a signed-in member of staff
    request: {NAVIGATION}
    session: {{issuer: corp, claims: {{sub: alice, groups: [staff], email: alice@shop.example}}}}
    expect: {{allowed: true, status: 200, reason: allowed, rule: staff,
             headers: {{x-user: alice, x-email: alice@shop.example}}}}
  - name: a session signed in nearly a ttl ago still holds
    request: {API}
    session: {{issuer: corp, claims: {{sub: alice, groups: [staff]}}, signed_in: {-HOUR + 1}}}
    expect: {{allowed: true}}
  - name: a session that ended, from an API call
    request: {API}
    session: {{issuer: corp, claims: {{sub: alice, groups: [staff]}}, expired: true}}
    expect: {{allowed: false, status: 401, reason: expired_session}}
  - name: a session that ended a second ago
    request: {API}
    session: {{issuer: corp, claims: {{sub: alice, groups: [staff]}}, signed_in: {-HOUR}}}
    expect: {{allowed: false, status: 401, reason: expired_session}}
  - name: a navigation whose session ended is sent to sign in
    request: {NAVIGATION}
    session: {{issuer: corp, claims: {{sub: alice, groups: [staff]}}, expired: true}}
    expect: {{allowed: false, status: 302, reason: expired_session}}
  - name: a navigation without a session is sent to sign in, nothing fetched
    request: {NAVIGATION}
    expect: {{allowed: false, status: 302, reason: missing_credential}}
  - name: an API call without a session keeps its 401
    request: {API}
    expect: {{allowed: false, status: 401, reason: missing_credential}}
  - name: a session without the role
    request: {NAVIGATION}
    session: {{issuer: corp, claims: {{sub: bob, groups: [guests]}}}}
    expect: {{allowed: false, status: 403, reason: no_permission}}
  - name: the issuer's bearer tokens verify against the same stand-in key
    request: {API}
    token: {{issuer: corp, claims: {{sub: carol, groups: [staff]}}}}
    expect: {{allowed: true, headers: {{x-user: carol}}}}
"""


def test_sessions_are_sealed_with_the_run_key_and_nothing_is_fetched(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, provider: Endpoint) -> None:
    code, out, err = run(capsys, tmp_path, write_policy(tmp_path, provider.url), CASES)
    assert (code, out, err) == (0, [f"{CASES.count('- name:')} passed, 0 failed"], "")
    assert provider.count() == 0


def test_sec_59_a_cookie_sealed_with_the_real_keys_does_not_open(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, provider: Endpoint) -> None:
    path = write_policy(tmp_path, provider.url)
    login = load_policy(path).logins[0]
    value, _ends = seal_session(login, {"sub": "mallory", "groups": ["staff"]}, NOW_SECONDS)
    cases = f"""\
cases:
  - name: a session sealed with the keys file's key
    request: {{method: GET, path: /app/orders, host: shop.example.com,
              headers: {{cookie: "{login.cookie}={value}"}}}}
    expect: {{allowed: false, status: 401, reason: invalid_session}}
"""
    code, out, err = run(capsys, tmp_path, path, cases)
    assert (code, out, err) == (0, ["1 passed, 0 failed"], "")
    assert provider.count() == 0


def test_a_case_that_expects_what_the_session_does_not_give_fails(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, provider: Endpoint) -> None:
    cases = f"""\
cases:
  - name: an ended session is not allowed
    request: {API}
    session: {{issuer: corp, claims: {{sub: alice, groups: [staff]}}, expired: true}}
    expect: {{allowed: true}}
"""
    code, out, _err = run(capsys, tmp_path, write_policy(tmp_path, provider.url), cases)
    assert code == 1
    assert out[-2:] == ["  decision: DENY 401 expired_session", "0 passed, 1 failed"]
    assert provider.count() == 0


@pytest.mark.parametrize(("session", "expected"), [
    pytest.param("{issuer: partners, claims: {sub: a}}",
                 ["{f}:4: cases[0].session.issuer: no issuer named 'partners' signs browsers in (login:; the "
                  "policy has: corp)"], id="no-login"),
    pytest.param("{issuer: corp, signed_in: 60}",
                 ["{f}:4: cases[0].session.signed_in: a session is signed in before --now: give 0 or fewer "
                  "seconds"], id="future"),
    pytest.param("{issuer: corp, claims: {since: 2026-01-01}}",
                 ["{f}:4: cases[0].session.claims: claims must be JSON values (quote a date or time)"], id="date"),
    pytest.param("{issuer: corp, claims: {sub: '" + "a" * 5000 + "'}}",
                 ["{f}:4: cases[0].session.claims: these claims do not fit a session cookie, even cut to the "
                  "subject, roles and scopes"], id="too-large"),
])
def test_a_bad_session_is_file_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                               provider: Endpoint, session: str, expected: list[str]) -> None:
    cases = (f"cases:\n  - name: x\n    request: {{path: /app/x}}\n    session: {session}\n"
             "    expect: {allowed: true}\n")
    code, out, err = run(capsys, tmp_path, write_policy(tmp_path, provider.url), cases)
    assert (code, out) == (2, [])
    assert err.splitlines() == [line.format(f=tmp_path / "cases.yaml") for line in expected]
    assert provider.count() == 0


def test_a_session_for_a_policy_without_login_is_file_line(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("version: 1\nroles:\n  r:\n    - {paths: [/a]}\n")
    cases = "cases:\n  - name: x\n    request: {path: /a}\n    session: {issuer: corp}\n    expect: {allowed: true}\n"
    code, out, err = run(capsys, tmp_path, str(tmp_path / "policy.yaml"), cases)
    assert (code, out) == (2, [])
    assert err.splitlines() == [f"{tmp_path / 'cases.yaml'}:4: cases[0].session.issuer: no issuer named 'corp' "
                                "signs browsers in (login:; the policy has: none)"]


def test_the_sign_in_redirect_goes_to_the_stand_in_provider(tmp_path: Path, provider: Endpoint) -> None:
    """The 302's Location: the stand-in discovery's authorization endpoint, with the flow's own query."""
    from authz.testing.cases import load_cases
    from authz.testing.runner import run_cases
    from authz.testing.standin import stand_in

    policy = load_policy(write_policy(tmp_path, provider.url))
    stand_ins = stand_in(policy)
    (tmp_path / "cases.yaml").write_text(f"cases:\n  - name: x\n    request: {NAVIGATION}\n"
                                         "    expect: {status: 302}\n")
    cases, problems = load_cases([str(tmp_path / "cases.yaml")], policy, stand_ins)
    assert problems == []
    [outcome] = run_cases(cases, stand_ins, NOW_SECONDS)
    assert outcome.decision.denial is not None
    [location] = [value for name, value in outcome.decision.denial.headers(None) if name == "location"]
    assert location.startswith(f"{provider.url}/authorize?response_type=code&client_id=shop-web&")
    assert provider.count() == 0
