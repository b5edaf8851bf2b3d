"""Sessions renewed with their refresh token (``session.refresh``) inside
the Check, against the provider stand-in, on the engine's own clock: when a
session is due, what the browser gets, rotation, and every failure bounded
by the session's own end (docs/security.md 87, 93, 95)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from authz.config import load_policy
from authz.decision import Decision
from authz.errors import ConfigError, Reason
from authz.login.cipher import Cipher, unb64url
from tests.unit.login.conftest import SECRET, Flow, Provider, client_headers, header, new_key, policy_text

SESSION = "__Host-authz_session"
ID = "__Host-authz_session_id"
REFRESH = "__Host-authz_session_refresh"
HOUR = 3600


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return time.monotonic()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def renewing(tmp_path: Path, provider: Provider, clock: Clock) -> Flow:
    provider.refreshing = True
    flow = Flow(tmp_path, provider, text=policy_text(provider.issuer, login_extra="        refresh: true\n"))
    flow.engine.clock = clock
    assert flow.sign_in().reason is Reason.SIGNED_IN
    return flow


def cookies_set(decision: Decision) -> dict[str, str]:
    return {v.partition("=")[0]: v for n, v in client_headers(decision) if n == "set-cookie"}


def session_end(flow: Flow) -> float:
    return float(json.loads(Cipher([unb64url(flow.keys[0])]).open(flow.jar[SESSION], SESSION))["e"])


def test_the_refresh_token_is_kept_sealed_only_when_the_policy_opts_in(tmp_path: Path, provider: Provider) -> None:
    provider.refreshing = True
    plain = Flow(tmp_path, provider)
    plain.sign_in()
    assert REFRESH not in plain.jar  # the provider issued one; the policy keeps none
    renewing = Flow(tmp_path, provider, text=policy_text(provider.issuer, login_extra="        refresh: true\n"))
    renewing.sign_in()
    value = renewing.jar[REFRESH]
    assert provider.refresh_tokens[-1] not in value
    assert Cipher([unb64url(renewing.keys[0])]).open(value, REFRESH).decode() == provider.refresh_tokens[-1]


def test_a_session_in_its_last_quarter_is_renewed_without_a_redirect(renewing: Flow, provider: Provider,
                                                                     clock: Clock) -> None:
    first_end = session_end(renewing)
    early = renewing.navigate("/app/home")
    assert early.allowed and cookies_set(early) == {} and early.cacheable
    assert early.valid_until is not None and early.valid_until <= first_end - HOUR / 4  # no cached allow past due
    assert [f for f in provider.token_forms if f.get("grant_type") == "refresh_token"] == []

    clock.now += 50 * 60  # ten minutes left
    provider.refresh_claims = provider.id_claims(None, now=clock.now, groups=["staff", "buyers"])
    spent = provider.refresh_tokens[-1]
    renewed = renewing.decide("GET", "/app/home", {"accept": "application/json"},
                              cookies={**renewing.jar, "theme": "dark"})
    assert renewed.allowed and not renewed.cacheable and header(renewed, "location") is None
    assert "buyers" in renewed.identity.roles  # decided with the renewed session
    assert dict(renewed.headers)["cookie"] == "theme=dark"  # no token upstream
    written = cookies_set(renewed)
    assert set(written) == {SESSION, ID, REFRESH}
    assert all("; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=3600" in v for v in written.values())
    form = provider.token_forms[-1]
    assert form == {"grant_type": "refresh_token", "refresh_token": spent}
    assert provider.endpoint.seen[-1].headers["authorization"].startswith("Basic ")
    renewing.keep(renewed)
    assert session_end(renewing) == pytest.approx(clock.now + HOUR)
    cipher = Cipher([unb64url(renewing.keys[0])])
    assert cipher.open(renewing.jar[REFRESH], REFRESH).decode() == provider.refresh_tokens[-1] != spent  # rotated
    assert cipher.open(renewing.jar[ID], ID).decode() == provider.issued[-1]  # the hint is the new ID token

    # The renewed session is not due: no call, no cookie.
    calls = len(provider.token_forms)
    again = renewing.navigate("/app/home")
    assert again.allowed and cookies_set(again) == {} and len(provider.token_forms) == calls


def test_without_a_new_id_token_the_claims_are_kept_and_the_refresh_token_too(renewing: Flow, provider: Provider,
                                                                               clock: Clock) -> None:
    provider.refresh_claims = None
    clock.now += 55 * 60
    renewed = renewing.navigate("/app/home")
    renewing.keep(renewed)
    assert renewed.allowed and renewed.identity.subject == "alice" and "staff" in renewed.identity.roles
    assert session_end(renewing) == pytest.approx(clock.now + HOUR)
    assert {SESSION, ID, REFRESH} <= set(cookies_set(renewed))  # the ID token and refresh token live as long


def test_requests_with_the_same_refresh_token_share_one_renewal(renewing: Flow, provider: Provider,
                                                                clock: Clock) -> None:
    clock.now += 50 * 60
    old = dict(renewing.jar)
    first = renewing.navigate("/app/home", cookies=old)
    second = renewing.navigate("/app/orders", cookies=old)  # a parallel request of the same browser
    assert first.allowed and second.allowed
    assert len([f for f in provider.token_forms if f.get("grant_type") == "refresh_token"]) == 1
    assert cookies_set(first)[REFRESH] != "" and REFRESH in cookies_set(second)


def test_a_refused_refresh_token_is_cleared_and_never_stretches_the_session(renewing: Flow, provider: Provider,
                                                                          clock: Clock) -> None:
    end = session_end(renewing)
    provider.honoured.clear()  # revoked
    clock.now += 50 * 60
    kept = renewing.navigate("/app/home")
    assert kept.allowed and kept.valid_until is not None and kept.valid_until <= end
    assert SESSION not in cookies_set(kept) and "Max-Age=0" in cookies_set(kept)[REFRESH]
    renewing.keep(kept)
    assert REFRESH not in renewing.jar
    clock.now = end + 1
    ended = renewing.navigate("/app/home")
    assert ended.reason is Reason.EXPIRED_SESSION and ended.status == 302  # sent to sign in, as without refresh
    assert not renewing.decide("GET", "/app/home", {"accept": "application/json"}).allowed


def test_a_provider_down_keeps_the_session_until_its_end_then_signs_in(renewing: Flow, provider: Provider,
                                                                       clock: Clock) -> None:
    end = session_end(renewing)
    provider.token_status = 503
    clock.now += 50 * 60
    kept = renewing.navigate("/app/home")
    assert kept.allowed and cookies_set(kept) == {} and kept.valid_until is not None and kept.valid_until <= end
    clock.now = end + 1
    ended = renewing.navigate("/app/home")
    assert ended.reason is Reason.EXPIRED_SESSION and ended.status == 302
    location = header(ended, "location") or ""
    assert location.startswith(provider.issuer + "/authorize?")
    assert {SESSION, ID, REFRESH} <= {k for k, v in cookies_set(ended).items() if "Max-Age=0" in v}


def test_an_ended_session_is_renewed_while_the_browser_still_sends_its_refresh_token(
        renewing: Flow, provider: Provider, clock: Clock) -> None:
    clock.now = session_end(renewing) + 5
    provider.refresh_claims = provider.id_claims(None, now=clock.now)
    renewed = renewing.navigate("/app/home")
    assert renewed.allowed and SESSION in cookies_set(renewed) and not renewed.cacheable


@pytest.mark.parametrize("change", ["subject", "audience", "key"])
def test_a_renewed_id_token_is_verified_as_at_the_callback(renewing: Flow, provider: Provider, clock: Clock,
                                                           change: str) -> None:
    from testkit.tokens import rsa_key

    end = session_end(renewing)
    clock.now += 50 * 60
    provider.refresh_claims = provider.id_claims(None, now=clock.now, **{
        "subject": {"sub": "mallory"}, "audience": {"aud": "another-client"}, "key": {}}[change])
    if change == "key":
        provider.sign_key = rsa_key("stranger")
    refused = renewing.navigate("/app/home")
    assert refused.allowed and refused.identity.subject == "alice" and refused.valid_until is not None
    assert refused.valid_until <= end and SESSION not in cookies_set(refused)


@pytest.mark.parametrize(("extra", "message"), [
    ("        refresh: true\n        refresh_before: 1h\n", "must be shorter than the session's ttl"),
    ("        refresh_before: 10m\n", "refresh_before without refresh: true"),
])
def test_a_bad_refresh_setting_is_a_file_line_problem(tmp_path: Path, provider: Provider, extra: str,
                                                      message: str) -> None:
    (tmp_path / "session.keys").write_text(new_key() + "\n")
    (tmp_path / "web.secret").write_text(SECRET + "\n")
    (tmp_path / "policy.yaml").write_text(policy_text(provider.issuer, login_extra=extra))
    with pytest.raises(ConfigError) as raised:
        load_policy(str(tmp_path / "policy.yaml"))
    assert message in str(raised.value) and "policy.yaml:" in str(raised.value), str(raised.value)


def test_the_generated_proxy_configs_pass_set_cookie_on_allow_to_the_client_only(
        tmp_path: Path, provider: Provider, capsys: pytest.CaptureFixture[str]) -> None:
    from authz.cli import main
    from authz.tools.policy_headers import PolicyHeaders

    flow = Flow(tmp_path, provider, text=policy_text(provider.issuer, login_extra="        refresh: true\n"))
    headers = PolicyHeaders.of(flow.engine.policy)
    assert "set-cookie" in headers.client and "set-cookie" not in headers.upstream
    (tmp_path / "plain.yaml").write_text(policy_text(provider.issuer))
    assert "set-cookie" not in PolicyHeaders.of(load_policy(str(tmp_path / "plain.yaml"))).client
    config = str(tmp_path / "policy.yaml")
    assert main(["envoy-config", "--config", config, "--shape", "edge", "--protocol", "http",
                 "--authz", "127.0.0.1:9191", "--upstream", "127.0.0.1:8080"]) == 0
    envoy = capsys.readouterr().out
    on_success = envoy.split("allowedClientHeadersOnSuccess:", 1)[1].split("dynamicMetadataFromHeaders", 1)[0]
    assert "exact: set-cookie" in on_success
    assert main(["envoy-config", "--config", config, "--format", "istio", "--protocol", "http",
                 "--authz", "authz.authz:8080"]) == 0
    assert "headersToDownstreamOnAllow" in capsys.readouterr().out
    assert main(["envoy-config", "--config", config, "--format", "emissary", "--protocol", "http",
                 "--authz", "authz.authz:8080"]) != 0
    assert "gRPC AuthService" in capsys.readouterr().err
    assert main(["envoy-config", "--config", config, "--format", "emissary", "--protocol", "grpc",
                 "--authz", "authz.authz:8080"]) == 0
