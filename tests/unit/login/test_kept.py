"""The ID token kept beside the session in a sealed cookie of its own, and
sent as ``id_token_hint`` at sign-out (docs/security.md 87, 88, 94, 95)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from authz.errors import Reason
from authz.login.cipher import Cipher, unb64url
from tests.unit.login.conftest import CLIENT, HOST, Flow, Provider, client_headers, header, location_params

SESSION = "__Host-authz_session"
ID = "__Host-authz_session_id"


def sign_out(flow: Flow) -> tuple[dict[str, list[str]], list[str]]:
    """Sign out: the end-session query and the reply's Set-Cookie values."""
    out = flow.decide("POST", "/oauth2/logout", {"origin": f"https://{HOST}"})
    assert out.reason is Reason.SIGNED_OUT and out.status == 302
    flow.keep(out)
    location = urlsplit(header(out, "location") or "")
    assert location.path == "/session/end"
    return parse_qs(location.query), [v for n, v in client_headers(out) if n == "set-cookie"]


def test_the_id_token_is_sealed_in_its_own_cookie_and_hinted_at_sign_out(flow: Flow, provider: Provider) -> None:
    signed_in = flow.sign_in()
    issued = provider.issued[-1]
    written = next(v for n, v in client_headers(signed_in) if n == "set-cookie" and v.startswith(ID + "="))
    assert "; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=3600" in written  # the session's lifetime
    value = flow.jar[ID]
    assert issued not in value and issued.split(".")[1] not in value  # sealed, not the token
    assert Cipher([unb64url(flow.keys[0])]).open(value, ID).decode() == issued
    allowed = flow.navigate("/app/home", cookies={**flow.jar, "theme": "dark"})
    assert allowed.allowed and dict(allowed.headers)["cookie"] == "theme=dark"  # never upstream
    query, cleared = sign_out(flow)
    assert query == {"client_id": [CLIENT], "id_token_hint": [issued]}
    assert any(v.startswith(ID + "=;") and "Max-Age=0" in v for v in cleared)
    assert ID not in flow.jar and SESSION not in flow.jar


def test_a_cookie_sealed_for_another_name_does_not_open_as_the_other(flow: Flow, provider: Provider) -> None:
    flow.sign_in()
    session, id_token = flow.jar[SESSION], flow.jar[ID]
    # The ID token's cookie is no session ...
    swapped = flow.decide("GET", "/app/home", cookies={SESSION: id_token})
    assert swapped.reason is Reason.INVALID_SESSION
    # ... and a session (or a tampered value) is no hint: the sign-out goes without one.
    for foreign in (session, id_token[:-4] + ("AAAA" if not id_token.endswith("AAAA") else "BBBB")):
        flow.jar = {SESSION: session, ID: foreign}
        query, _ = sign_out(flow)
        assert query == {"client_id": [CLIENT]}


def test_an_id_token_too_large_for_a_cookie_is_left_out(flow: Flow, provider: Provider,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    params = location_params(flow.navigate("/app/home"))
    provider.claims = provider.id_claims(params["nonce"], bio="x" * 3000)
    with caplog.at_level(logging.WARNING, logger="authz.login"):
        signed_in = flow.navigate(f"/oauth2/callback?code=c&state={params['state']}")
    assert signed_in.reason is Reason.SIGNED_IN and ID not in flow.jar and SESSION in flow.jar
    assert any(ID in record.getMessage() and "not kept" in record.getMessage() for record in caplog.records)
    assert flow.navigate("/app/home").allowed  # the session works without it
    query, _ = sign_out(flow)
    assert query == {"client_id": [CLIENT]}  # no hint


def test_the_id_token_cookie_is_cleared_with_a_session_that_failed(flow: Flow, provider: Provider) -> None:
    flow.sign_in()
    cipher = Cipher([unb64url(flow.keys[0])])
    flow.jar[SESSION] = cipher.seal(json.dumps({"c": {"sub": "alice"}, "e": 1_000_000}).encode(), SESSION)
    again = flow.navigate("/app/home")
    assert again.reason is Reason.EXPIRED_SESSION and again.status == 302
    cleared = [v for n, v in client_headers(again) if n == "set-cookie" and "Max-Age=0" in v]
    assert {v.partition("=")[0] for v in cleared} == {SESSION, ID}
    assert ID not in flow.jar


def test_no_id_token_is_kept_for_a_provider_without_an_end_session_endpoint(tmp_path: Path,
                                                                          provider: Provider) -> None:
    provider.end_session = False
    flow = Flow(tmp_path, provider)
    assert flow.sign_in().reason is Reason.SIGNED_IN
    assert SESSION in flow.jar and ID not in flow.jar  # nothing to hint: no cookie to carry
    out = flow.decide("POST", "/oauth2/logout", {"origin": f"https://{HOST}"})
    assert out.reason is Reason.SIGNED_OUT and header(out, "location") == "/"
