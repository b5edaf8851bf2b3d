"""A sign-out revokes the browser's refresh token at the provider's
revocation endpoint (RFC 7009) before it answers; a revocation that fails
never keeps the browser signed in (docs/security.md 96)."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from authz.errors import Reason
from authz.login.cipher import Cipher, unb64url
from authz.login.discovery import parse_discovery
from authz.outside.http import FetchError
from tests.unit.login.conftest import CLIENT, HOST, SECRET, Flow, Provider, client_headers, header, policy_text

SESSION = "__Host-authz_session"
ID = "__Host-authz_session_id"
REFRESH = "__Host-authz_session_refresh"


@pytest.fixture
def renewing(tmp_path: Path, provider: Provider) -> Flow:
    provider.refreshing = True
    flow = Flow(tmp_path, provider, text=policy_text(provider.issuer, login_extra="        refresh: true\n"))
    assert flow.sign_in().reason is Reason.SIGNED_IN and REFRESH in flow.jar
    return flow


def sign_out(flow: Flow) -> list[str]:
    """Sign out; the names of the cookies the reply clears."""
    out = flow.decide("POST", "/oauth2/logout", {"origin": f"https://{HOST}"})
    assert out.reason is Reason.SIGNED_OUT and out.status == 302
    assert (header(out, "location") or "").startswith(flow.provider.issuer + "/session/end?")
    flow.keep(out)
    return [v.partition("=")[0] for n, v in client_headers(out) if n == "set-cookie" and "Max-Age=0" in v]


def test_signing_out_revokes_the_refresh_token_as_the_client(renewing: Flow, provider: Provider,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    refresh = Cipher([unb64url(renewing.keys[0])]).open(renewing.jar[REFRESH], REFRESH).decode()
    assert refresh in provider.honoured
    with caplog.at_level(logging.WARNING, logger="authz.login"):
        cleared = sign_out(renewing)
    assert {SESSION, ID, REFRESH} <= set(cleared) and not renewing.jar
    [seen] = provider.revoked
    assert seen.form == {"token": refresh, "token_type_hint": "refresh_token"}
    assert seen.headers["authorization"] == "Basic " + base64.b64encode(f"{CLIENT}:{SECRET}".encode()).decode()
    assert refresh not in provider.honoured
    assert not caplog.records  # an empty 200 is a revocation, not a failure


@pytest.mark.parametrize("status", [503, 400])
def test_a_revocation_that_fails_is_logged_and_the_sign_out_goes_on(renewing: Flow, provider: Provider, status: int,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    provider.revocation_status = status
    with caplog.at_level(logging.WARNING, logger="authz.login"):
        cleared = sign_out(renewing)
    assert {SESSION, ID, REFRESH} <= set(cleared) and not renewing.jar
    assert len(provider.revoked) == 1
    assert any("refresh token not revoked" in r.getMessage() and f"answered {status}" in r.getMessage()
               for r in caplog.records)
    assert not renewing.navigate("/app/home").allowed  # signed out all the same: sent to sign in


def test_without_a_revocation_endpoint_or_a_refresh_token_nothing_is_called(tmp_path: Path,
                                                                            provider: Provider) -> None:
    provider.refreshing = True
    provider.revocation = False
    (tmp_path / "refresh").mkdir()
    (tmp_path / "plain").mkdir()
    refreshing = policy_text(provider.issuer, login_extra="        refresh: true\n")
    flow = Flow(tmp_path / "refresh", provider, text=refreshing)
    assert flow.sign_in().reason is Reason.SIGNED_IN and REFRESH in flow.jar
    sign_out(flow)
    provider.revocation = True
    plain = Flow(tmp_path / "plain", provider)  # no session.refresh: no refresh token kept
    assert plain.sign_in().reason is Reason.SIGNED_IN and REFRESH not in plain.jar
    sign_out(plain)
    assert provider.revoked == []


@pytest.mark.parametrize("value", ["not a url", "ftp://idp.example/revoke", 7])
def test_a_garbled_revocation_endpoint_is_a_bad_discovery_document(value: object) -> None:
    document = {"issuer": "https://idp.example", "authorization_endpoint": "https://idp.example/auth",
                "token_endpoint": "https://idp.example/token", "revocation_endpoint": value}
    with pytest.raises(FetchError, match="revocation_endpoint"):
        parse_discovery(document, "https://idp.example")
    del document["revocation_endpoint"]
    assert parse_discovery(document, "https://idp.example").revocation is None


def test_a_revocation_endpoint_that_does_not_answer_holds_the_sign_out_only_for_the_timeout(
        tmp_path: Path, provider: Provider, caplog: pytest.LogCaptureFixture) -> None:
    provider.refreshing = True
    flow = Flow(tmp_path, provider, text=policy_text(provider.issuer,
                                                     login_extra="        refresh: true\n      timeout: 300ms\n"))
    assert flow.sign_in().reason is Reason.SIGNED_IN and REFRESH in flow.jar
    provider.endpoint.mode = "hang"  # discovery and keys are held already: only the revocation is asked
    with caplog.at_level(logging.WARNING, logger="authz.login"):
        cleared = sign_out(flow)
    assert {SESSION, ID, REFRESH} <= set(cleared) and not flow.jar
    assert provider.endpoint.count("/revoke") == 1
    # The call ended at its own timeout, not at the test's wait (10 s): the sign-out was held that long only.
    assert any("refresh token not revoked: no answer within 0.3s" in r.getMessage() for r in caplog.records)
