"""Browser sign-in through the engine against a provider stand-in: the
flow's replies, the session as an identity, and each refusal with its
stable reason (docs/security.md K)."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import urlsplit

from authz.errors import Reason
from authz.login.cipher import Cipher, unb64url
from tests.unit.login.conftest import CLIENT, HOST, SECRET, Flow, Provider, header, location_params, new_key

SESSION = "__Host-authz_session"
STATE = "__Host-authz_session_login"


def test_a_navigation_without_a_session_is_sent_to_sign_in_and_an_api_call_keeps_its_401(flow: Flow,
                                                                                          provider: Provider) -> None:
    decision = flow.navigate("/app/orders?page=2")
    assert decision.status == 302 and decision.reason is Reason.MISSING_CREDENTIAL
    location = header(decision, "location") or ""
    assert location.startswith(provider.issuer + "/authorize?")
    params = location_params(decision)
    assert params["response_type"] == "code" and params["client_id"] == CLIENT
    assert params["redirect_uri"] == f"https://{HOST}/oauth2/callback"
    assert params["code_challenge_method"] == "S256" and len(params["state"]) >= 43 and len(params["nonce"]) >= 43
    assert params["scope"] == "openid profile email"
    cookie = header(decision, "set-cookie") or ""
    assert cookie.startswith(STATE + "=")
    assert "; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600" in cookie
    api = flow.decide("GET", "/app/orders", {"accept": "application/json"})
    assert api.status == 401 and api.reason is Reason.MISSING_CREDENTIAL and header(api, "location") is None
    outside = flow.decide("GET", "/other", {"accept": "text/html"})
    assert outside.status == 401  # not under login.paths


def test_sign_in_sets_a_session_that_is_an_identity_of_the_issuer(flow: Flow, provider: Provider) -> None:
    signed_in = flow.sign_in("/app/orders?page=2")
    assert signed_in.status == 302 and signed_in.reason is Reason.SIGNED_IN
    assert header(signed_in, "location") == "/app/orders?page=2"
    form = provider.token_forms[-1]
    assert form["grant_type"] == "authorization_code" and form["redirect_uri"] == f"https://{HOST}/oauth2/callback"
    sent = provider.endpoint.seen[-1].headers["authorization"]
    assert sent == "Basic " + base64.b64encode(f"{CLIENT}:{SECRET}".encode()).decode()
    started_challenge = hashlib.sha256(form["code_verifier"].encode()).digest()
    assert len(started_challenge) == 32
    assert SESSION in flow.jar and STATE not in flow.jar  # the state cookie is cleared
    assert len(flow.jar[SESSION]) < 3800
    allowed = flow.navigate("/app/orders", cookies={**flow.jar, "theme": "dark"})
    assert allowed.allowed and allowed.identity.subject == "alice" and "staff" in allowed.identity.roles
    assert dict(allowed.headers)["x-user"] == "alice"
    assert dict(allowed.headers)["cookie"] == "theme=dark"  # the session never reaches the upstream
    only = flow.navigate("/app/orders")
    assert only.allowed and "cookie" in only.remove


def test_the_pkce_verifier_matches_the_challenge_sent(flow: Flow, provider: Provider) -> None:
    started = flow.navigate("/app/home")
    params = location_params(started)
    provider.claims = provider.id_claims(params["nonce"])
    flow.navigate(f"/oauth2/callback?code=c1&state={params['state']}")
    verifier = provider.token_forms[-1]["code_verifier"]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert challenge == params["code_challenge"]


def test_a_bearer_token_decides_as_today_beside_a_session(flow: Flow) -> None:
    flow.sign_in()
    decision = flow.decide("GET", "/app/orders", {"authorization": "Bearer not.a.token", "accept": "text/html"})
    assert decision.reason is Reason.INVALID_TOKEN and decision.status == 401  # not sent to sign in
    assert flow.decide("GET", "/app/orders", {"accept": "text/html"}).allowed  # the control: the session


def test_a_callback_without_state_or_with_a_foreign_one_is_refused(flow: Flow, provider: Provider) -> None:
    missing = flow.navigate("/oauth2/callback?code=x&state=abc")
    assert missing.status == 403 and missing.reason is Reason.LOGIN_STATE_INVALID
    assert header(missing, "location") is None
    started = flow.navigate("/app/home")
    provider.claims = provider.id_claims(location_params(started)["nonce"])
    foreign = flow.navigate("/oauth2/callback?code=x&state=someone-elses")
    assert foreign.reason is Reason.LOGIN_STATE_INVALID
    assert not provider.token_forms  # refused before any call


def test_a_reused_state_is_refused(flow: Flow, provider: Provider) -> None:
    started = flow.navigate("/app/home")
    jar = dict(flow.jar)
    params = location_params(started)
    provider.claims = provider.id_claims(params["nonce"])
    target = f"/oauth2/callback?code=c&state={params['state']}"
    assert flow.navigate(target).reason is Reason.SIGNED_IN
    again = flow.navigate(target, cookies=jar)  # the same browser's state cookie, replayed
    assert again.reason is Reason.LOGIN_STATE_REUSED and again.status == 403


def test_a_mismatched_nonce_is_refused(flow: Flow, provider: Provider) -> None:
    params = location_params(flow.navigate("/app/home"))
    provider.claims = provider.id_claims("another-nonce")
    refused = flow.navigate(f"/oauth2/callback?code=c&state={params['state']}")
    assert refused.reason is Reason.LOGIN_NONCE_MISMATCH and SESSION not in flow.jar


def test_an_id_token_of_another_issuer_audience_or_key_or_azp_is_refused(flow: Flow, provider: Provider) -> None:
    from testkit.tokens import rsa_key

    cases = [{"iss": "https://evil.example"}, {"aud": "another-client"}, {"azp": "another-client"},
             {"exp": 1_000_000_000}]
    for overrides in [*cases, "key"]:
        params = location_params(flow.navigate("/app/home"))
        if overrides == "key":
            provider.sign_key = rsa_key("other")
            provider.claims = provider.id_claims(params["nonce"])
        else:
            provider.claims = provider.id_claims(params["nonce"], **overrides)  # type: ignore[arg-type]
        refused = flow.navigate(f"/oauth2/callback?code=c&state={params['state']}")
        assert refused.reason is Reason.LOGIN_ID_TOKEN_INVALID, (overrides, refused.detail)
        assert header(refused, "location") is None and SESSION not in flow.jar


def test_an_open_redirect_as_the_return_url_is_refused(flow: Flow, provider: Provider) -> None:
    cipher = Cipher([unb64url(flow.keys[0])])
    for target in ("//evil.example/x", "https://evil.example/", "/%2F%2Fevil.example", "/\\evil.example",
                   "/%5Cevil.example", "/%252F%252Fevil.example", "/\t/evil.example"):
        params = location_params(flow.navigate("/app/home"))
        state = json.loads(cipher.open(flow.jar[STATE], STATE))
        state["r"] = target
        flow.jar[STATE] = cipher.seal(json.dumps(state).encode(), STATE)
        provider.claims = provider.id_claims(params["nonce"])
        refused = flow.navigate(f"/oauth2/callback?code=c&state={params['state']}")
        assert refused.reason is Reason.LOGIN_RETURN_INVALID, target
        assert header(refused, "location") is None


def test_a_provider_error_is_shown_once_never_a_redirect(flow: Flow, provider: Provider) -> None:
    params = location_params(flow.navigate("/app/home"))
    refused = flow.navigate(f"/oauth2/callback?error=access_denied&state={params['state']}")
    assert refused.status == 403 and refused.reason is Reason.LOGIN_PROVIDER_ERROR
    assert header(refused, "location") is None and STATE not in flow.jar
    # The code refused by the token endpoint (invalid_grant) is one too.
    params = location_params(flow.navigate("/app/home"))
    provider.claims = None
    refused = flow.navigate(f"/oauth2/callback?code=used&state={params['state']}")
    assert refused.reason is Reason.LOGIN_PROVIDER_ERROR and header(refused, "location") is None


def test_no_redirect_while_the_provider_is_down(tmp_path: object, provider: Provider) -> None:
    provider.discovery_status = 500
    flow = Flow(tmp_path, provider)  # type: ignore[arg-type]
    decision = flow.navigate("/app/home")
    assert decision.status == 401 and header(decision, "location") is None
    assert not decision.cacheable  # once the provider is back, a navigation is sent to sign in
    api = flow.decide("GET", "/app/home", {"accept": "application/json"})
    assert api.status == 401 and api.cacheable  # the control: an API call's 401 is kept as before


def test_no_redirect_while_the_key_set_is_unavailable(tmp_path: object, provider: Provider) -> None:
    provider.jwks_status = 500
    flow = Flow(tmp_path, provider)  # type: ignore[arg-type]
    decision = flow.navigate("/app/home")
    assert decision.status == 401 and header(decision, "location") is None


def test_a_tampered_expired_or_old_key_session_is_refused(flow: Flow, provider: Provider) -> None:
    flow.sign_in()
    good = flow.jar[SESSION]
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    api = flow.decide("GET", "/app/home", cookies={SESSION: tampered})
    assert api.status == 401 and api.reason is Reason.INVALID_SESSION
    browser = flow.navigate("/app/home", cookies={SESSION: tampered})
    assert browser.reason is Reason.INVALID_SESSION and browser.status == 302  # sent to sign in again
    cipher = Cipher([unb64url(flow.keys[0])])
    ended = cipher.seal(json.dumps({"c": {"sub": "alice", "groups": ["staff"]}, "e": 1_000_000}).encode(), SESSION)
    assert flow.decide("GET", "/app/home", cookies={SESSION: ended}).reason is Reason.EXPIRED_SESSION
    # A state cookie is no session, though sealed with the same key.
    wrong_purpose = cipher.seal(json.dumps({"c": {"sub": "alice"}, "e": 9e9}).encode(), STATE)
    assert flow.decide("GET", "/app/home", cookies={SESSION: wrong_purpose}).reason is Reason.INVALID_SESSION
    # Rotation: a new first key, the old one still opens; once removed, it no longer does.
    assert str(flow.tmp / "session.keys") in flow.engine.policy.files  # watched: a change reloads the policy
    new = new_key()
    flow.write([new, flow.keys[0]])
    assert flow.decide("GET", "/app/home", cookies={SESSION: good}).allowed
    flow.write([new])
    assert flow.decide("GET", "/app/home", cookies={SESSION: good}).reason is Reason.INVALID_SESSION


def test_logout_needs_a_same_origin_post(flow: Flow, provider: Provider) -> None:
    flow.sign_in()
    get = flow.navigate("/oauth2/logout")
    assert get.reason is Reason.LOGOUT_REFUSED and get.status == 403 and SESSION in flow.jar
    cross = flow.decide("POST", "/oauth2/logout", {"origin": "https://evil.example"})
    assert cross.reason is Reason.LOGOUT_REFUSED
    none = flow.decide("POST", "/oauth2/logout", {"sec-fetch-site": "cross-site"})
    assert none.reason is Reason.LOGOUT_REFUSED
    out = flow.decide("POST", "/oauth2/logout", {"origin": f"https://{HOST}"})
    flow.keep(out)
    assert out.reason is Reason.SIGNED_OUT and out.status == 302
    location = header(out, "location") or ""
    assert urlsplit(location).path == "/session/end" and f"client_id={CLIENT}" in location
    assert SESSION not in flow.jar
    assert flow.navigate("/app/home").status == 302  # back to sign in


def test_a_public_client_sends_its_client_id_and_no_secret(tmp_path: object, provider: Provider) -> None:
    from tests.unit.login.conftest import policy_text

    text = policy_text(provider.issuer).replace("      client_secret_file: web.secret\n", "")
    flow = Flow(tmp_path, provider, text=text)  # type: ignore[arg-type]
    assert flow.sign_in().reason is Reason.SIGNED_IN
    assert provider.token_forms[-1]["client_id"] == CLIENT
    assert "authorization" not in provider.endpoint.seen[-1].headers


def test_a_session_keeps_what_fits_a_cookie(flow: Flow, provider: Provider) -> None:
    params = location_params(flow.navigate("/app/home"))
    provider.claims = provider.id_claims(params["nonce"], bio="x" * 3000, sid="s1", at_hash="h")
    assert flow.navigate(f"/oauth2/callback?code=c&state={params['state']}").reason is Reason.SIGNED_IN
    assert len(flow.jar[SESSION]) <= 3800
    allowed = flow.navigate("/app/home")
    assert allowed.allowed and "staff" in allowed.identity.roles  # the roles claim is kept
    claims = json.loads(Cipher([unb64url(flow.keys[0])]).open(flow.jar[SESSION], SESSION))["c"]
    assert "bio" not in claims and "sid" not in claims and claims["email"] == "alice@shop.example"
    del flow.jar[SESSION]
    params = location_params(flow.navigate("/app/home"))
    provider.claims = provider.id_claims(params["nonce"], sub="x" * 3000)
    refused = flow.navigate(f"/oauth2/callback?code=c2&state={params['state']}")
    assert refused.reason is Reason.LOGIN_ID_TOKEN_INVALID and header(refused, "location") is None
