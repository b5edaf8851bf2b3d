"""The Netlify Edge Function (deploy/netlify-edge) in front of a real Envoy and authz.

The function is compiled with tsc and run under Node by a small harness whose
``context.next()`` forwards to the Envoy edge listener, as Netlify's proxy
rewrite would. The IdP's key set comes from a real HTTP server; authz trusts
the function's assertions through the shipped ``authz-issuer.yaml``, unchanged.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authz.tools.envoy_config import EnvoyOptions
from testkit.idp import FakeIdP
from testkit.paths import REPO
from testkit.procs import Authz, Echo, Envoy, Proc, http_get
from testkit.tokens import ec_key, jwks, public_jwk, rsa_key, token

EDGE_DIR = REPO / "deploy" / "netlify-edge"
BUILT = EDGE_DIR / "build" / "netlify" / "edge-functions" / "authz-edge.js"
HARNESS = EDGE_DIR / "test" / "harness.mjs"
SNIPPET = EDGE_DIR / "authz-issuer.yaml"

IDP_KID = "idp-1"
EDGE_KID = "netlify-edge-1"
KEYGEN_KID = "netlify-edge-keygen"
ASSERTION = "x-edge-assertion"
ASSERTION_TYPE = "edge-assertion+jwt"
USER_AUDIENCE = "orders-api"


@pytest.fixture(scope="module")
def built() -> Path:
    """The edge function, type-checked and compiled (tsc fails on a type error)."""
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: the Netlify edge test needs Node.js 20+ (scripts/setup test checks)",
                    pytrace=False)
    tsc = EDGE_DIR / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.is_file() or not (EDGE_DIR / "node_modules" / "jose").is_dir():
        pytest.fail(f"{EDGE_DIR}/node_modules is missing: run scripts/setup", pytrace=False)
    result = subprocess.run(["node", str(tsc), "-p", "tsconfig.json"], cwd=EDGE_DIR, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert BUILT.is_file()
    return BUILT


class Harness:
    """The compiled edge function under Node, forwarding to ``origin``."""

    def __init__(self, built: Path, origin: str, env: dict[str, str]) -> None:
        self.proc = Proc(["node", str(HARNESS), "--function", str(built), "--origin", origin],
                         name="netlify-edge", env=env, cwd=str(EDGE_DIR))
        self.url = ""

    def __enter__(self) -> Harness:
        line = self.proc.wait_for(r"harness listening on http://127\.0\.0\.1:\d+")
        match = re.search(r"http://\S+", line)
        assert match is not None
        self.url = match.group(0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stop()

    def forwards(self, since: int) -> list[str]:
        return [line for line in self.proc.lines[since:] if line.startswith("forward ")]


@dataclass
class Stack:
    idp: FakeIdP
    echo: Echo
    authz: Authz
    envoy: Envoy
    edge: Harness
    env: dict[str, str]
    built: Path
    edge_issuer: str
    edge_audience: str
    keygen_jwk: str


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _policy(tmp: Path, extra_public_keys: list[dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    """The shipped snippet, as is, plus roles and response headers; its
    relative jwks_file is written beside it."""
    snippet = yaml.safe_load(SNIPPET.read_text())
    (issuer,) = snippet["issuers"]
    keys_file = tmp / issuer["jwks_file"]
    keys_file.parent.mkdir(parents=True, exist_ok=True)
    keys_file.write_text(json.dumps(jwks(public_jwk(ec_key("netlify-edge"), kid=EDGE_KID, alg="ES256"),
                                         *extra_public_keys)))
    policy = dict(snippet)
    policy["roles"] = {
        "orders-reader": [{"methods": ["GET", "HEAD"], "paths": ["/api/orders", "/api/orders/*"]}],
        "orders-admin": [{"paths": ["/api/orders/**"]}],
        "billing-viewer": [{"methods": ["GET"], "paths": ["/api/billing/**"]}],
    }
    policy["response"] = {**snippet["response"], "headers": {
        "x-user-id": "identity.subject",
        "x-user-roles": 'identity.roles.join(",")',
        "x-user-issuer": "identity.issuer",
    }}
    path = tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path, issuer


def _keygen(out: Path) -> dict[str, Path]:
    result = subprocess.run(["node", "scripts/keygen.mjs", "--kid", KEYGEN_KID, "--out-dir", str(out)],
                            cwd=EDGE_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return {suffix: out / f"{KEYGEN_KID}{suffix}" for suffix in (".pem", ".jwk.json", ".jwks.json")}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, built: Path) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("netlify-edge")
    generated = _keygen(tmp / "generated")
    keygen_public = json.loads(generated[".jwks.json"].read_text())["keys"]
    policy, issuer = _policy(tmp, keygen_public)
    with FakeIdP() as idp, Echo() as echo, Authz(policy, workers=1) as authz, \
            Envoy(tmp, EnvoyOptions(shape="edge", authz=[authz.grpc_address], upstream=echo.address)) as envoy:
        idp.jwks = jwks(public_jwk(rsa_key("netlify-idp"), kid=IDP_KID, alg="RS256"))
        env = {
            "IDP_ISSUER": idp.issuer,
            "IDP_JWKS_URL": idp.url + "/jwks",
            "IDP_AUDIENCES": f"other-api, {USER_AUDIENCE}",
            "IDP_ALGORITHMS": "RS256",
            "IDP_CLOCK_TOLERANCE": "30",
            "IDP_ROLES_CLAIM": "roles",
            "IDP_SCOPES_CLAIM": "scope",
            "IDP_TOKEN_TYPE": "",
            "EDGE_ISSUER": issuer["issuer"],
            "EDGE_AUDIENCE": issuer["audiences"][0],
            "EDGE_SIGNING_KEY": _pem(ec_key("netlify-edge")),
            "EDGE_KEY_ID": EDGE_KID,
            "EDGE_ASSERTION_TTL": "",
            "EDGE_FORWARD_CLAIMS": "",
        }
        with Harness(built, envoy.url, env) as edge:
            yield Stack(idp=idp, echo=echo, authz=authz, envoy=envoy, edge=edge, env=env, built=built,
                        edge_issuer=issuer["issuer"], edge_audience=issuer["audiences"][0],
                        keygen_jwk=generated[".jwk.json"].read_text())


def user_token(stack: Stack, *, key: Any = None, kid: str | None = IDP_KID, **overrides: Any) -> str:
    """An access token from the stack's IdP; ``None`` deletes a claim."""
    now = int(time.time())
    payload: dict[str, Any] = {"iss": stack.idp.issuer, "aud": USER_AUDIENCE, "sub": "alice", "iat": now - 10,
                               "exp": now + 600, "roles": ["orders-reader"], "scope": "orders:read",
                               "email": "alice@example.com", "tenant": "t1"}
    for name, value in overrides.items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return token(payload, key=key if key is not None else rsa_key("netlify-idp"), alg="RS256", kid=kid)


def forged_assertion(stack: Stack, **overrides: Any) -> str:
    """An assertion signed with the edge function's real key, as a client that
    stole it, or replays one, would send it."""
    now = int(time.time())
    payload = {"iss": stack.edge_issuer, "aud": stack.edge_audience, "sub": "root", "roles": ["orders-admin"],
               "scope": "", "iat": now, "exp": now + 60, "jti": "forged", **overrides}
    header = {"alg": "ES256", "kid": EDGE_KID, "typ": ASSERTION_TYPE}
    return token(payload, key=ec_key("netlify-edge"), alg="ES256", header=header)


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def _ext_authz(envoy: Envoy) -> dict[str, int]:
    stats = envoy.stats()
    out = {k.rsplit(".", 1)[-1]: v for k, v in stats.items() if k.startswith("http.ingress_http.ext_authz.")}
    out["downstream_rq_total"] = stats["http.ingress_http.downstream_rq_total"]
    return out


def _moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after.keys() | before.keys()
            if after.get(k, 0) != before.get(k, 0)}


def assert_never_forwarded(stack: Stack, mark: int, before: dict[str, int]) -> None:
    """Nothing reached Envoy (its counters move synchronously with a
    forwarded request) and the harness forwarded nothing before a sentinel
    request, whose own forward line proves the harness's output was read."""
    assert _moved(before, _ext_authz(stack.envoy)) == {}
    sentinel = f"/api/orders/sentinel-{uuid.uuid4().hex}"
    assert http_get(stack.edge.url + sentinel, bearer(user_token(stack)))[0] == 200
    stack.edge.proc.wait_for(re.escape(f"forward GET {sentinel}"), since=mark)
    assert stack.edge.forwards(mark) == [f"forward GET {sentinel}"]


def test_reader_reaches_upstream_as_the_verified_user(stack: Stack) -> None:
    before = _ext_authz(stack.envoy)
    status, _headers, body = http_get(stack.edge.url + "/api/orders/7", {
        **bearer(user_token(stack)),
        # Forged by the client: an assertion that authz itself would accept
        # (right key, issuer and audience) and an identity header.
        ASSERTION: forged_assertion(stack),
        "x-user-id": "root",
    })
    assert status == 200, body
    seen = json.loads(body)["headers"]
    assert seen["x-user-id"] == "alice"
    assert seen["x-user-roles"] == "orders-reader"
    assert seen["x-user-issuer"] == stack.edge_issuer  # authz trusted the edge's assertion
    assert "authorization" not in seen
    assert ASSERTION not in seen  # response.remove in the shipped snippet
    assert _moved(before, _ext_authz(stack.envoy)) == {"downstream_rq_total": 1, "ok": 1}


@pytest.mark.parametrize(("roles", "method", "path", "expected"), [
    (["orders-admin"], "POST", "/api/orders/7/cancel", 200),
    (["orders-reader"], "POST", "/api/orders/7", 403),
    (["billing-viewer"], "GET", "/api/orders/7", 403),
    ([], "GET", "/api/orders", 403),
])
def test_roles_travel_in_the_assertion_and_authz_decides(stack: Stack, roles: list[str], method: str, path: str,
                                                         expected: int) -> None:
    before = _ext_authz(stack.envoy)
    status, headers, body = http_get(stack.edge.url + path, bearer(user_token(stack, roles=roles)), method=method)
    assert status == expected, body
    moved = _moved(before, _ext_authz(stack.envoy))
    if expected == 200:
        assert moved == {"downstream_rq_total": 1, "ok": 1}
        return
    # authz's answer, not the edge's: the request went through Envoy's check.
    assert moved == {"downstream_rq_total": 1, "denied": 1}
    assert headers["content-type"] == "application/json"
    document = json.loads(body)
    assert document["error"] == "forbidden" and document["reason"] == "no_permission"


def test_forged_assertion_is_one_authz_would_accept(stack: Stack) -> None:
    """Control for the tests below: sent straight to Envoy (no edge), the
    forged assertion passes, so only the edge function keeps it out."""
    status, _headers, body = http_get(stack.envoy.url + "/api/orders/7", {ASSERTION: forged_assertion(stack)})
    assert status == 200, body
    assert json.loads(body)["headers"]["x-user-id"] == "root"


def _other_key() -> Any:
    return rsa_key("netlify-intruder")


REJECTED: dict[str, tuple[Any, str]] = {
    "no-credential": (lambda s: {}, "missing_credential"),
    "basic-scheme": (lambda s: {"authorization": "Basic YWxpY2U6c2VjcmV0"}, "missing_credential"),
    "empty-bearer": (lambda s: {"authorization": "Bearer"}, "invalid_token"),
    "not-a-jwt": (lambda s: bearer("not-a-token"), "invalid_token"),
    "two-tokens": (lambda s: bearer(f"{user_token(s)} {user_token(s)}"), "invalid_token"),
    "expired": (lambda s: bearer(user_token(s, iat=int(time.time()) - 1200, exp=int(time.time()) - 600)),
                "expired_token"),
    "wrong-audience": (lambda s: bearer(user_token(s, aud="payments-api")), "invalid_token"),
    "wrong-issuer": (lambda s: bearer(user_token(s, iss="https://idp.evil.example")), "invalid_token"),
    "other-key-same-kid": (lambda s: bearer(user_token(s, key=_other_key())), "invalid_token"),
    "other-key-unknown-kid": (lambda s: bearer(user_token(s, key=_other_key(), kid="intruder")), "invalid_token"),
    "no-kid": (lambda s: bearer(user_token(s, key=_other_key(), kid=None)), "invalid_token"),
    "hs256-alg": (lambda s: bearer(token({"iss": s.idp.issuer, "aud": USER_AUDIENCE, "sub": "alice",
                                          "exp": int(time.time()) + 600}, key=b"secret", alg="HS256", kid=IDP_KID)),
                  "invalid_token"),
    "no-exp": (lambda s: bearer(user_token(s, exp=None)), "invalid_token"),
    "no-sub": (lambda s: bearer(user_token(s, sub=None)), "invalid_token"),
    "not-yet-valid": (lambda s: bearer(user_token(s, nbf=int(time.time()) + 600)), "invalid_token"),
    "assertion-as-bearer": (lambda s: bearer(forged_assertion(s)), "invalid_token"),
    "forged-assertion-other-audience": (lambda s: {ASSERTION: forged_assertion(s, aud="elsewhere")},
                                        "missing_credential"),
    "forged-assertion-authz-would-accept": (lambda s: {ASSERTION: forged_assertion(s)}, "missing_credential"),
    "forged-assertion-and-expired-token": (
        lambda s: {ASSERTION: forged_assertion(s),
                   **bearer(user_token(s, iat=int(time.time()) - 1200, exp=int(time.time()) - 600))},
        "expired_token"),
}


@pytest.mark.parametrize("case", list(REJECTED))
def test_rejected_at_the_edge_and_never_forwarded(stack: Stack, case: str) -> None:
    make_headers, reason = REJECTED[case]
    headers = make_headers(stack)
    mark = stack.edge.proc.mark()
    before = _ext_authz(stack.envoy)
    status, answer_headers, body = http_get(stack.edge.url + "/api/orders/7", headers)
    assert status == 401, body
    assert answer_headers["content-type"] == "application/json"
    assert answer_headers["cache-control"] == "no-store"
    document = json.loads(body)
    assert document["error"] == "unauthenticated" and document["reason"] == reason
    assert document["request_id"]
    challenge = answer_headers["www-authenticate"]
    assert challenge.startswith("Bearer")
    assert ('error="invalid_token"' in challenge) == (reason != "missing_credential")
    for value in headers.values():
        assert value.split()[-1] not in body.decode()  # no credential echoed
    assert_never_forwarded(stack, mark, before)


def test_forwarded_request_carries_a_fresh_assertion_and_no_token(stack: Stack) -> None:
    """The harness pointed straight at the echo upstream: exactly what the
    function sends the origin."""
    env = {**stack.env, "EDGE_FORWARD_CLAIMS": "tenant", "IDP_SCOPES_CLAIM": "scp"}
    user = user_token(stack, roles=["orders-reader", "orders-admin"], scp=["orders:read", "orders:write"])
    request_body = b'{"quantity": 2}'
    with Harness(stack.built, f"http://{stack.echo.address}", env) as edge:
        seen_assertions = []
        for _ in range(2):
            request = urllib.request.Request(
                edge.url + "/api/orders/7?expand=items", data=request_body, method="POST",
                headers={**bearer(user), ASSERTION: "forged", "x-tenant": "t1", "content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                echoed = json.loads(response.read())
            assert echoed["method"] == "POST" and echoed["path"] == "/api/orders/7?expand=items"
            seen = echoed["headers"]
            assert "authorization" not in seen
            assert seen["x-tenant"] == "t1" and seen["content-type"] == "application/json"
            assert seen["content-length"] == str(len(request_body))
            assert seen[ASSERTION] != "forged"
            seen_assertions.append(seen[ASSERTION])

    public = jwt.PyJWK(public_jwk(ec_key("netlify-edge"), kid=EDGE_KID, alg="ES256")).key
    now = time.time()
    jtis = set()
    for assertion in seen_assertions:
        header = jwt.get_unverified_header(assertion)
        assert header == {"alg": "ES256", "kid": EDGE_KID, "typ": ASSERTION_TYPE}
        claims = jwt.decode(assertion, public, algorithms=["ES256"], audience=stack.edge_audience,
                            issuer=stack.edge_issuer)
        # Exactly these: nothing else of the user's token (email) leaks.
        assert set(claims) == {"iss", "aud", "sub", "iat", "exp", "jti", "roles", "scope", "tenant"}
        assert claims["sub"] == "alice"
        assert claims["roles"] == ["orders-reader", "orders-admin"]
        assert claims["scope"] == "orders:read orders:write"
        assert claims["tenant"] == "t1"
        assert claims["exp"] - claims["iat"] == 60
        assert abs(claims["iat"] - now) <= 5
        jtis.add(claims["jti"])
    assert len(jtis) == 2


@pytest.mark.parametrize("form", ["jwk", "pem-one-line"])
def test_signing_key_forms(stack: Stack, form: str) -> None:
    """A private JWK from scripts/keygen.mjs (kid inside, no EDGE_KEY_ID), and
    a PEM pasted into one line with literal \\n: both sign what authz accepts."""
    if form == "jwk":
        env = {**stack.env, "EDGE_SIGNING_KEY": stack.keygen_jwk, "EDGE_KEY_ID": ""}
        kid = KEYGEN_KID
    else:
        env = {**stack.env, "EDGE_SIGNING_KEY": stack.env["EDGE_SIGNING_KEY"].strip().replace("\n", "\\n")}
        kid = EDGE_KID
    with Harness(stack.built, f"http://{stack.echo.address}", env) as direct:
        status, _headers, body = http_get(direct.url + "/api/orders/7", bearer(user_token(stack)))
        assert status == 200, body
        assert jwt.get_unverified_header(json.loads(body)["headers"][ASSERTION])["kid"] == kid
    with Harness(stack.built, stack.envoy.url, env) as edge:
        status, _headers, body = http_get(edge.url + "/api/orders/7", bearer(user_token(stack)))
        assert status == 200, body
        assert json.loads(body)["headers"]["x-user-id"] == "alice"


def test_keygen_keeps_the_private_key_private(built: Path, tmp_path: Path) -> None:
    files = _keygen(tmp_path)
    assert files[".pem"].stat().st_mode & 0o077 == 0
    assert files[".jwk.json"].stat().st_mode & 0o077 == 0
    (public,) = json.loads(files[".jwks.json"].read_text())["keys"]
    assert "d" not in public and public["kid"] == KEYGEN_KID and public["crv"] == "P-256"
    # It never overwrites a key.
    again = subprocess.run(["node", "scripts/keygen.mjs", "--kid", KEYGEN_KID, "--out-dir", str(tmp_path)],
                           cwd=EDGE_DIR, capture_output=True, text=True, timeout=60)
    assert again.returncode != 0


@pytest.mark.parametrize(("overrides", "named"), [
    ({"EDGE_SIGNING_KEY": ""}, "EDGE_SIGNING_KEY"),
    ({"EDGE_SIGNING_KEY": "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----"}, "EDGE_SIGNING_KEY"),
    ({"EDGE_SIGNING_KEY": "public-jwk"}, "EDGE_SIGNING_KEY"),
    ({"EDGE_KEY_ID": ""}, "EDGE_KEY_ID"),
    ({"IDP_ALGORITHMS": "RS256,HS256"}, "IDP_ALGORITHMS"),
    ({"IDP_AUDIENCES": ""}, "IDP_AUDIENCES"),
    ({"EDGE_AUDIENCE": ""}, "EDGE_AUDIENCE"),
    ({"EDGE_FORWARD_CLAIMS": "tenant,sub"}, "EDGE_FORWARD_CLAIMS"),
])
def test_misconfigured_function_fails_closed(stack: Stack, overrides: dict[str, str], named: str) -> None:
    if overrides.get("EDGE_SIGNING_KEY") == "public-jwk":
        overrides = {"EDGE_SIGNING_KEY": json.dumps(public_jwk(ec_key("netlify-edge"), kid=EDGE_KID))}
    before = _ext_authz(stack.envoy)
    with Harness(stack.built, stack.envoy.url, {**stack.env, **overrides}) as edge:
        status, _headers, body = http_get(edge.url + "/api/orders/7", bearer(user_token(stack)))
        assert status == 500, body
        assert json.loads(body)["reason"] == "internal_error"
        line = edge.proc.wait_for("authz-edge: misconfigured")
        assert named in line
        secret = overrides.get("EDGE_SIGNING_KEY")
        if secret:
            assert secret not in edge.proc.output()
        assert edge.forwards(0) == []
    assert _moved(before, _ext_authz(stack.envoy)) == {}


def test_idp_keys_unavailable_is_503_then_recovers(stack: Stack) -> None:
    with FakeIdP() as idp:  # another key server for the same tokens
        idp.mode = "500"
        env = {**stack.env, "IDP_JWKS_URL": idp.url + "/jwks"}
        before = _ext_authz(stack.envoy)
        with Harness(stack.built, stack.envoy.url, env) as edge:
            status, _headers, body = http_get(edge.url + "/api/orders/7", bearer(user_token(stack)))
            assert status == 503, body
            assert json.loads(body)["reason"] == "jwks_unavailable"
            assert _moved(before, _ext_authz(stack.envoy)) == {}
            idp.mode = "ok"
            idp.jwks = stack.idp.jwks
            status, _headers, body = http_get(edge.url + "/api/orders/7", bearer(user_token(stack)))
            assert status == 200, body
            edge.proc.wait_for("forward GET /api/orders/7")
            assert edge.forwards(0) == ["forward GET /api/orders/7"]
