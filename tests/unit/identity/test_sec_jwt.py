"""docs/security.md A-C (entries 1-24), one test per entry, through the engine.

Each test loads a real policy from ``tmp_path`` with :func:`load_policy`,
decides with :meth:`Engine.decide` at a fixed clock, and asserts the
decision (allowed, 401, reason, challenge). Each has a positive control: the
same token without the defect is allowed, so every test can fail.

"No JWKS fetch or signature check" is proven with :class:`testkit.keys.PausingKeys`,
never armed here: a small real :class:`authz.identity.jwt.KeyProvider` that
hands out the issuer's own key set and counts how often it was asked. Every signature check
starts by asking for the key set, so ``lookups == 0`` means the token was
refused before any key was looked up or used.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import NameOID

from authz.config import load_policy
from authz.decision import Decision
from authz.engine import Engine
from authz.errors import ConfigError, InvalidToken
from authz.identity.jws import parse_compact
from authz.identity.keys import KeySet
from authz.policy import Policy
from authz.testing.runner import FixedClock
from testkit import tokens
from testkit.idp import FakeIdP
from testkit.keys import PausingKeys, pausing
from testkit.requests import request
from testkit.tokens import b64, ec_key, encode_part, raw_sign, rsa_key

NOW = 1_900_000_000
ISSUER = "https://idp.test"
AUDIENCE = "api"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_PRIME = 2**256 - 2**224 + 2**192 + 2**96 - 1
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

RSA = rsa_key("sec-issuer")
EC = ec_key("sec-issuer")
ATTACKER = rsa_key("sec-attacker")


@dataclasses.dataclass
class Setup:
    engine: Engine
    policy: Policy
    counters: dict[str, PausingKeys]

    @property
    def lookups(self) -> int:
        return sum(counter.lookups for counter in self.counters.values())

    def keyset(self, name: str = "idp") -> KeySet:
        keys = self.counters[name].inner.current()
        assert keys is not None
        return keys

    def decide(self, token: str | None = None, *, authorization: str | None = None) -> Decision:
        headers = {"authorization": authorization} if authorization is not None else None
        return self.engine.decide(request(bearer=token, headers=headers))

    def allowed(self, token: str) -> None:
        decision = self.decide(token)
        assert decision.allowed is True, decision.detail
        assert decision.reason == "allowed"
        assert decision.identity.subject == "alice"

    def denied(self, token: str | None, reason: str = "invalid_token", detail: str | None = None, *,
               authorization: str | None = None, lookups: int | None = 0) -> Decision:
        """Assert a 401 with ``reason``; ``lookups`` is how many key-set
        lookups it may cost (0: refused before any key was looked up)."""
        before = self.lookups
        decision = self.decide(token, authorization=authorization)
        assert decision.allowed is False
        assert decision.status == 401
        assert decision.reason == reason, decision.detail
        assert decision.challenge is not None and decision.challenge.startswith("Bearer ")
        assert 'error="invalid_token"' in decision.challenge
        if detail is not None:
            assert decision.detail is not None and detail in decision.detail, decision.detail
        if lookups is not None:
            assert self.lookups - before == lookups, decision.detail
        return decision


def rsa_jwk(key: Any, kid: str | None, alg: str | None = None, **extra: Any) -> dict[str, Any]:
    return tokens.public_jwk(key, kid=kid, alg=alg, **extra)


def oct_jwk(secret: bytes, kid: str, alg: str | None = "HS256") -> dict[str, Any]:
    jwk = {"kty": "oct", "kid": kid, "k": b64(secret)}
    if alg is not None:
        jwk["alg"] = alg
    return jwk


def issuer_config(name: str = "idp", issuer: str = ISSUER, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": name, "issuer": issuer, "audiences": [AUDIENCE], "jwks_file": f"{name}.jwks.json",
        "algorithms": ["RS256", "ES256"], "leeway": "30s", "roles_claim": "roles",
    }
    config.update(overrides)
    return config


def default_keys() -> dict[str, Any]:
    return tokens.jwks(rsa_jwk(RSA, "rsa-1"), tokens.public_jwk(EC, kid="ec-1"))


@pytest.fixture
def make(tmp_path: Path) -> Callable[..., Setup]:
    """``make(issuers=[...], keys={name: jwks})``: a policy in tmp_path, an
    engine at NOW, and the key-lookup counters."""

    def build(issuers: list[dict[str, Any]] | None = None, keys: dict[str, Any] | None = None,
              now: float = NOW) -> Setup:
        issuers = issuers if issuers is not None else [issuer_config()]
        keys = keys if keys is not None else {"idp": default_keys()}
        for name, document in keys.items():
            (tmp_path / f"{name}.jwks.json").write_text(json.dumps(document))
        policy_file = tmp_path / "policy.yaml"
        policy_file.write_text(yaml.safe_dump({
            "version": 1,
            "issuers": issuers,
            "roles": {"reader": [{"paths": ["/api/**"]}]},
        }, sort_keys=False))
        policy, counters = pausing(load_policy(str(policy_file)))
        return Setup(Engine(policy, clock=FixedClock(now)), policy, counters)

    return build


@pytest.fixture
def setup(make: Callable[..., Setup]) -> Setup:
    return make()


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims at NOW; an override of None removes the claim."""
    base: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": NOW - 10, "exp": NOW + 600, "roles": ["reader"],
    }
    for name, value in overrides.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def header(alg: str = "RS256", kid: str | None = "rsa-1", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        out["kid"] = kid
    out.update(extra)
    return out


def mint(payload: dict[str, Any] | bytes | None = None, hdr: dict[str, Any] | bytes | None = None, *,
         key: Any = RSA, alg: str = "RS256") -> str:
    """A token signed over exactly the given header and payload."""
    return tokens.token(payload if payload is not None else claims(), key=key, alg=alg,
                        header=hdr if hdr is not None else header(alg))


def signed(header_segment: str, payload_segment: str, key: Any = RSA, alg: str = "RS256") -> str:
    """A token whose signature covers the segments exactly as given (even
    when they are not canonical base64url), so only the encoding is wrong."""
    signing_input = f"{header_segment}.{payload_segment}".encode()
    return f"{header_segment}.{payload_segment}.{b64(raw_sign(signing_input, key, alg))}"


def raw(text: str) -> bytes:
    return text.encode()


def raw_claims(extra: str | bytes = "", **overrides: Any) -> bytes:
    """Claims as JSON text with ``extra`` members spliced in verbatim."""
    body = json.dumps(claims(**overrides), separators=(",", ":")).encode()
    if isinstance(extra, str):
        extra = extra.encode()
    return body[:-1] + (b"," + extra if extra else b"") + b"}"


# -- A. Token shape -----------------------------------------------------------


def test_sec_01_segments(setup: Setup) -> None:
    good = mint()
    h, p, s = good.split(".")
    setup.allowed(good)
    jwe_header = encode_part({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": "rsa-1"})
    cases = {
        "one": h,
        "two": f"{h}.{p}",
        "four": f"{h}.{p}.{s}.{s}",
        "four-empty": f"{h}.{p}.{s}.",
        "five (JWE)": f"{jwe_header}.{s}.{b64(bytes(12))}.{p}.{b64(bytes(16))}",
        "empty header": f".{p}.{s}",
        "empty payload": f"{h}..{s}",
        "empty signature": f"{h}.{p}.",
        "only dots": "..",
    }
    for name, token in cases.items():
        decision = setup.denied(token)
        assert decision.detail is not None and ("segment" in decision.detail or "payload" in decision.detail), name
    setup.denied("", detail="empty value", authorization="Bearer ")
    setup.allowed(good)


def _canonical_case() -> tuple[str, str]:
    """Header and payload segments with leftover bits (lengths not a
    multiple of 4), the payload containing both '-' and '_'."""
    hseg = next(h for i in range(4) if len(h := encode_part(header(x="y" * i))) % 4)
    for filler in range(10_000):
        pseg = encode_part(claims(n=filler, pad="~~~???>>>"))
        if len(pseg) % 4 and "-" in pseg and "_" in pseg:
            return hseg, pseg
    raise AssertionError("no suitable payload")


def _flip_unused_bit(segment: str) -> str:
    """The same bytes to a lenient decoder: set a bit of the last character
    that base64 leaves unused."""
    unused = 0x0F if len(segment) % 4 == 2 else 0x03
    index = _B64.index(segment[-1])
    assert index & unused == 0
    return segment[:-1] + _B64[index | 1]


def _lenient(segment: str) -> bytes:
    """What a forgiving decoder (Python's own) makes of a segment."""
    core = segment.rstrip("=").translate(str.maketrans("+/", "-_"))
    return base64.urlsafe_b64decode(core + "=" * (-len(core) % 4))


def test_sec_02_non_canonical_base64url(setup: Setup) -> None:
    hseg, pseg = _canonical_case()
    good = signed(hseg, pseg)
    setup.allowed(good)
    sseg = good.split(".")[2]
    assert len(sseg) % 4 == 2  # 256 signature bytes leave unused bits
    padded = pseg + "=" * (-len(pseg) % 4)
    standard = pseg.replace("-", "+").replace("_", "/")
    variants = {
        # re-signed over the non-canonical text: only the encoding is wrong
        "payload padded": signed(hseg, padded),
        "payload padded twice": signed(hseg, pseg + "=="),
        "payload with + and /": signed(hseg, standard),
        "payload trailing bits": signed(hseg, _flip_unused_bit(pseg)),
        "header trailing bits": signed(_flip_unused_bit(hseg), pseg),
        "header padded": signed(hseg + "=" * (-len(hseg) % 4), pseg),
        "payload junk !": signed(hseg, pseg[:10] + "!" + pseg[10:]),
        "payload junk %3D": signed(hseg, pseg + "%3D"),
        "payload non-ASCII": signed(hseg, pseg[:10] + "é" + pseg[10:]),
        "payload newline": signed(hseg, pseg[:10] + "\n" + pseg[10:]),
        "payload CR": signed(hseg, pseg[:10] + "\r" + pseg[10:]),
        # the original, valid signature: a lenient decoder reads the same bytes
        "signature padded": f"{hseg}.{pseg}.{sseg}==",
        "signature trailing bits": f"{hseg}.{pseg}.{_flip_unused_bit(sseg)}",
    }
    if "-" in sseg or "_" in sseg:
        variants["signature with + and /"] = f"{hseg}.{pseg}.{sseg.translate(str.maketrans('-_', '+/'))}"
    for name, token in variants.items():
        if name.startswith("signature"):
            # the point of these cases: a forgiving decoder reads the same bytes
            assert _lenient(token.split(".")[2]) == _lenient(sseg), name
        setup.denied(token, detail="not canonical base64url")
    # Whitespace splits the credential before base64 is even read.
    for spaced in (signed(hseg, pseg[:10] + " " + pseg[10:]), signed(hseg, pseg[:10] + "\t" + pseg[10:]), f"{good} "):
        setup.denied(spaced, detail="more than one credential")
    setup.allowed(good)


def _token_of_size(target: int, **issuer_claims: Any) -> str:
    """The longest validly signed token no longer than ``target``."""
    low, high = 0, target
    best = None
    while low <= high:
        middle = (low + high) // 2
        token = mint(claims(filler="x" * middle, **issuer_claims))
        if len(token) <= target:
            best, low = token, middle + 1
        else:
            high = middle - 1
    assert best is not None
    return best


def test_sec_03_token_size_cap(make: Callable[..., Setup]) -> None:
    setup = make()
    at_cap = _token_of_size(8192)
    assert 8188 <= len(at_cap) <= 8192
    setup.allowed(at_cap)
    over = _token_of_size(8200)
    assert 8192 < len(over) <= 8200
    setup.denied(over, detail="longer than the configured maximum")
    # Refused on length alone: 8193 characters of junk never reach a decoder.
    setup.denied("!" * 8193, detail="longer than the configured maximum")
    setup.denied("!!!.!!!.!!!", detail="not canonical base64url")
    # The parser itself checks the cap first too, whoever calls it.
    with pytest.raises(InvalidToken, match="longer than the configured maximum"):
        parse_compact("!" * 8193)
    with pytest.raises(InvalidToken, match="longer than the configured maximum"):
        parse_compact(at_cap, max_size=len(at_cap) - 1)
    assert parse_compact(at_cap).payload["sub"] == "alice"

    # A configured cap, per issuer: 'small' allows 1 KiB, 'big' the default.
    two = make(
        issuers=[issuer_config("small", max_token_size=1024), issuer_config("big", issuer="https://big.test")],
        keys={"small": default_keys(), "big": default_keys()},
    )
    small_ok = _token_of_size(1024)
    small_over = _token_of_size(1500)
    assert len(small_over) > 1024
    two.allowed(small_ok)
    two.denied(small_over, detail="longer than the configured maximum")
    two.allowed(mint(claims(iss="https://big.test", filler="x" * 1000)))
    setup.allowed(small_over)  # the same token under the default cap


def test_sec_04_two_credentials_in_one_header(setup: Setup) -> None:
    a = mint()
    b = mint(claims(sub="bob"))
    setup.allowed(a)
    for value in (f"Bearer {a},Bearer {b}", f"Bearer {a}, Bearer {b}", f"Bearer {a},{b}", f"Bearer {a},",
                  f"Bearer {a} {b}"):
        setup.denied(None, authorization=value, detail="more than one credential")
    setup.allowed(a)


def _nested(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(("part", "data"), [
    ("header", raw('["RS256"]')),
    ("header", raw('"RS256"')),
    ("header", raw("null")),
    ("header", raw("1")),
    ("header", b'{"alg":"RS256","kid":"rsa-1","x":"\xff"}'),
    ("header", b"\xef\xbb\xbf" + json.dumps(header()).encode()),  # UTF-8 BOM
    ("header", json.dumps({**header(), "deep": _nested(16)}).encode()),
    ("payload", raw('["alice"]')),
    ("payload", raw('"alice"')),
    ("payload", raw("true")),
    ("payload", raw_claims(b'"name":"\xc3\x28"')),
    ("payload", raw_claims('"name":"\\ud800"')),  # a lone surrogate
    ("payload", raw_claims('"deep":' + json.dumps(_nested(16)))),
    ("payload", raw_claims('"deep":' + "[" * 2000 + "]" * 2000)),
], ids=["header-array", "header-string", "header-null", "header-number", "header-invalid-utf8", "header-bom",
        "header-too-deep", "payload-array", "payload-string", "payload-true", "payload-invalid-utf8",
        "payload-lone-surrogate", "payload-too-deep", "payload-very-deep"])
def test_sec_05_header_or_payload_not_a_json_object(setup: Setup, part: str, data: bytes) -> None:
    token = mint(hdr=data) if part == "header" else mint(payload=data)
    setup.denied(token, detail=f"{part} is not a valid JSON object")
    # Control: the deepest nesting allowed (16 levels, the object itself
    # included) and valid non-ASCII text pass.
    setup.allowed(mint(raw_claims('"deep":' + json.dumps(_nested(15)))))
    setup.allowed(mint(hdr={**header(), "deep": _nested(15)}))
    setup.allowed(mint(raw_claims('"name":"Zoë \\u00e9"')))


def test_sec_06_duplicate_members(setup: Setup) -> None:
    setup.allowed(mint(raw_claims()))
    setup.denied(mint(raw_claims('"sub":"admin"')), detail="payload is not a valid JSON object")
    setup.denied(mint(raw_claims('"roles":["admin"]')), detail="payload is not a valid JSON object")
    setup.denied(mint(raw_claims('"nested":{"a":1,"a":2}')), detail="payload is not a valid JSON object")
    for text in ('{"alg":"none","alg":"RS256","kid":"rsa-1"}', '{"alg":"RS256","alg":"RS256","kid":"rsa-1"}',
                 '{"alg":"RS256","kid":"rsa-1","kid":"rsa-1"}'):
        setup.denied(mint(hdr=raw(text)), detail="header is not a valid JSON object")
    setup.allowed(mint(hdr=raw('{"alg":"RS256","kid":"rsa-1"}')))


def test_sec_06_a_shared_header_is_parsed_once_and_refused_every_time() -> None:
    """Parsed headers are kept for the next token with the same header text:
    the kept one is read-only, and one that fails to parse is refused again
    each time, never remembered as good."""
    good = encode_part({"alg": "RS256", "kid": "rsa-1"})
    first = parse_compact(f"{good}.{encode_part({'sub': 'a'})}.c2ln")
    second = parse_compact(f"{good}.{encode_part({'sub': 'b'})}.c2ln")
    assert first.header is second.header and dict(first.header) == {"alg": "RS256", "kid": "rsa-1"}
    with pytest.raises(TypeError):
        first.header["alg"] = "none"  # type: ignore[index]
    bad = encode_part('{"alg":"RS256","alg":"none"}')
    for _ in range(3):
        with pytest.raises(InvalidToken, match="header is not a valid JSON object"):
            parse_compact(f"{bad}.{encode_part({'sub': 'a'})}.c2ln")
    # A header too long to keep is parsed, and checked, just the same.
    long = encode_part({"alg": "RS256", "kid": "k" * 600})
    assert parse_compact(f"{long}.{encode_part({'sub': 'a'})}.c2ln").header["kid"] == "k" * 600
    long_bad = encode_part('{"alg":"RS256","kid":"' + "k" * 600 + '","kid":"x"}')
    with pytest.raises(InvalidToken, match="header is not a valid JSON object"):
        parse_compact(f"{long_bad}.{encode_part({'sub': 'a'})}.c2ln")


@pytest.mark.parametrize("member", [
    '"x":NaN', '"x":Infinity', '"x":-Infinity', '"x":1e400', '"x":-1e400', '"x":[1,{"y":NaN}]',
])
def test_sec_07_non_finite_numbers(setup: Setup, member: str) -> None:
    setup.denied(mint(raw_claims(member)), detail="payload is not a valid JSON object")
    setup.denied(mint(hdr=raw('{"alg":"RS256","kid":"rsa-1",' + member + "}")),
                 detail="header is not a valid JSON object")
    setup.allowed(mint(raw_claims('"x":1e300')))


def test_sec_07_out_of_range_times(setup: Setup) -> None:
    text = json.dumps(claims(), separators=(",", ":"))
    for value in ("1e400", "1" + "0" * 400):
        body = text.replace(f'"exp":{NOW + 600}', f'"exp":{value}')
        assert body != text
        setup.denied(mint(body.encode()))
    setup.allowed(mint(text.replace(f'"exp":{NOW + 600}', f'"exp":{NOW + 600}.5').encode()))


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "", None, 256, ["RS256"], {"RS256": True}, "missing"])
def test_sec_08_alg_none_missing_or_not_a_string(setup: Setup, alg: Any) -> None:
    hdr = {"typ": "JWT", "kid": "rsa-1"}
    if alg != "missing":
        hdr["alg"] = alg
    h, p = encode_part(hdr), encode_part(claims())
    # a real RS256 signature, so only the header is at fault
    token = signed(h, p)
    setup.denied(token, detail="alg")
    setup.denied(f"{h}.{p}.", detail="empty token segment")  # the unsecured form
    setup.allowed(signed(encode_part({**hdr, "alg": "RS256"}), p))


def test_sec_08_config_cannot_allow_none(make: Callable[..., Setup]) -> None:
    with pytest.raises(ConfigError):
        make(issuers=[issuer_config(algorithms=["none"])])
    with pytest.raises(ConfigError):
        make(issuers=[issuer_config(algorithms=["RS256", "none"])])


def test_sec_09_alg_not_in_the_issuer_allow_list(make: Callable[..., Setup]) -> None:
    # The issuer's key carries no alg, so it could verify RS512 if allowed.
    token = mint(hdr=header("RS512"), alg="RS512")
    only_rs256 = make(issuers=[issuer_config(algorithms=["RS256"])])
    only_rs256.denied(token, detail="alg not allowed")
    only_rs256.denied(mint(hdr=header("PS256"), alg="PS256"), detail="alg not allowed")
    only_rs256.allowed(mint())
    both = make(issuers=[issuer_config(algorithms=["RS256", "RS512"])])
    both.allowed(token)


def _public_key_encodings() -> dict[str, bytes]:
    public = RSA.public_key()
    return {
        "PEM SubjectPublicKeyInfo": public.public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo),
        "PEM PKCS1": public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
        "DER": public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        "OpenSSH": public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
        "JWK JSON": json.dumps(rsa_jwk(RSA, "rsa-1")).encode(),
        "JWK JSON compact": json.dumps(rsa_jwk(RSA, "rsa-1"), separators=(",", ":")).encode(),
        "n bytes": public.public_numbers().n.to_bytes(256, "big"),
        "n base64url": rsa_jwk(RSA, "rsa-1")["n"].encode(),
    }


@pytest.mark.parametrize("encoding", list(_public_key_encodings()))
def test_sec_10_hs256_signed_with_the_public_key(make: Callable[..., Setup], encoding: str) -> None:
    secret = _public_key_encodings()[encoding]
    forged = mint(hdr=header("HS256"), key=secret, alg="HS256")
    forged_no_kid = mint(hdr=header("HS256", kid=None), key=secret, alg="HS256")
    typical = make(issuers=[issuer_config(algorithms=["RS256"])])
    typical.denied(forged, detail="alg not allowed")
    typical.allowed(mint())
    # Even when HS256 is allowed for the issuer, its RSA key is never an HMAC secret.
    mixed = make(issuers=[issuer_config(algorithms=["RS256", "HS256"])],
                 keys={"idp": tokens.jwks(rsa_jwk(RSA, "rsa-1"))})
    assert {key.alg for key in mixed.keyset().keys} == {"RS256"}
    mixed.denied(forged, detail="signature does not verify", lookups=1)
    mixed.denied(forged_no_kid, detail="signature does not verify", lookups=1)
    mixed.allowed(mint())


def test_sec_10_control_a_real_shared_secret_works(make: Callable[..., Setup]) -> None:
    secret = bytes(range(32))
    setup = make(issuers=[issuer_config(algorithms=["HS256"])], keys={"idp": tokens.jwks(oct_jwk(secret, "hs-1"))})
    setup.allowed(mint(hdr=header("HS256", kid="hs-1"), key=secret, alg="HS256"))
    setup.denied(mint(hdr=header("HS256", kid="hs-1"), key=bytes(32), alg="HS256"), detail="signature does not verify",
                 lookups=1)


def test_sec_11_jwk_without_alg_takes_the_configured_algorithm(make: Callable[..., Setup]) -> None:
    keys = {"idp": tokens.jwks(rsa_jwk(RSA, "rsa-1"))}
    assert "alg" not in keys["idp"]["keys"][0]
    pss = make(issuers=[issuer_config(algorithms=["PS256"])], keys=keys)
    assert [key.alg for key in pss.keyset().keys] == ["PS256"]  # not PyJWK's RS256 default
    pss.allowed(mint(hdr=header("PS256"), alg="PS256"))
    pss.denied(mint(hdr=header("RS256")), detail="alg not allowed")
    # With both allowed, the one key serves each, and each signature only its own alg.
    both = make(issuers=[issuer_config(algorithms=["PS256", "RS256"])], keys=keys)
    assert sorted(key.alg for key in both.keyset().keys) == ["PS256", "RS256"]
    both.allowed(mint(hdr=header("RS256")))
    both.allowed(mint(hdr=header("PS256"), alg="PS256"))
    h, p = encode_part(header("PS256")), encode_part(claims())
    pkcs1_signature = raw_sign(f"{h}.{p}".encode(), RSA, "RS256")
    both.denied(f"{h}.{p}.{b64(pkcs1_signature)}", detail="signature does not verify", lookups=1)


def _es256(r: int, s: int, width: int = 32) -> bytes:
    return r.to_bytes(width, "big") + s.to_bytes(width, "big")


def test_sec_12_ecdsa_signature_range_and_length(make: Callable[..., Setup]) -> None:
    setup = make(issuers=[issuer_config(algorithms=["ES256"])])
    h, p = encode_part(header("ES256", kid="ec-1")), encode_part(claims())
    good = signed(h, p, EC, "ES256")
    setup.allowed(good)
    signature = base64.urlsafe_b64decode(good.split(".")[2] + "==")
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    n = P256_ORDER
    out_of_range = {
        "r=0": _es256(0, s), "s=0": _es256(r, 0), "r=s=0": _es256(0, 0),
        "r=n": _es256(n, s), "s=n": _es256(r, n), "r=n,s=n": _es256(n, n),
        "r=2^256-1": _es256(2**256 - 1, s),
        "63 bytes": signature[:63], "65 bytes": signature + b"\x00", "62 bytes": signature[1:63],
        "DER": utils.encode_dss_signature(r, s), "128 bytes": signature + signature,
        "96 bytes (P-384 width)": _es256(r, s, 48),
    }
    for bad in out_of_range.values():
        setup.denied(f"{h}.{p}.{b64(bad)}", detail="wrong shape for ES256")
    # In range but not a signature: refused by the cryptography.
    for bad in (_es256(1, s), _es256(r, 1), _es256(1, 1), _es256(n - 1, s), _es256(r, n - 1), _es256(n - 1, n - 1)):
        setup.denied(f"{h}.{p}.{b64(bad)}", detail="signature does not verify", lookups=1)
    setup.allowed(good)


def _ec_jwk_with(key: ec.EllipticCurvePrivateKey, kid: str, **members: Any) -> dict[str, Any]:
    jwk = tokens.public_jwk(key, kid=kid)
    jwk.update(members)
    return jwk


def test_sec_13_curve_mismatch_and_off_curve_points(make: Callable[..., Setup]) -> None:
    p384 = ec_key("sec-384", "P-384")
    numbers = EC.public_key().public_numbers()
    off_curve_y = b64(((numbers.y + 1) % P256_PRIME).to_bytes(32, "big"))
    p384_x = tokens.public_jwk(p384, kid=None)["x"]
    keys = tokens.jwks(
        rsa_jwk(RSA, "rsa-1"),
        tokens.public_jwk(p384, kid="ec-384"),                            # P-384: no ES256 or ES384 allowed for it
        _ec_jwk_with(p384, "ec-384-as-es256", alg="ES256"),              # alg does not fit the curve
        _ec_jwk_with(EC, "ec-off-curve", y=off_curve_y),                   # point not on P-256
        _ec_jwk_with(EC, "ec-wrong-crv", crv="P-256", x=p384_x),          # P-384 coordinate on P-256
    )
    setup = make(issuers=[issuer_config(algorithms=["RS256", "ES256"])], keys={"idp": keys})
    keyset = setup.keyset()
    assert {key.kid for key in keyset.keys} == {"rsa-1"}
    for kid in ("ec-384", "ec-384-as-es256", "ec-off-curve", "ec-wrong-crv"):
        assert any(f"kid {kid!r}" in reason for reason in keyset.skipped), kid

    h, p = encode_part(header("ES256", kid="ec-off-curve")), encode_part(claims())
    setup.denied(signed(h, p, EC, "ES256"), detail="unknown kid", lookups=1)
    # ES256 with a P-384 key: a P-384 signature has the wrong width for ES256.
    for kid in ("ec-384", "ec-384-as-es256"):
        h, p = encode_part(header("ES256", kid=kid)), encode_part(claims())
        der = p384.sign(f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = utils.decode_dss_signature(der)
        setup.denied(f"{h}.{p}.{b64(_es256(r, s, 48))}", detail="wrong shape for ES256")
    # ES384 with the P-256 key: not allowed, and the key serves ES256 only.
    setup.denied(mint(hdr=header("ES384", kid="ec-1"), key=ec_key("sec-384", "P-384"), alg="ES384"),
                 detail="alg not allowed")
    es = make(issuers=[issuer_config(algorithms=["ES256", "ES384"])],
              keys={"idp": tokens.jwks(tokens.public_jwk(EC, kid="ec-1"), tokens.public_jwk(p384, kid="ec-384"))})
    h, p = encode_part(header("ES384", kid="ec-1")), encode_part(claims())
    der = EC.sign(f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA384()))
    r, s = utils.decode_dss_signature(der)
    es.denied(f"{h}.{p}.{b64(_es256(r, s, 48))}", detail="signature does not verify", lookups=1)
    # Controls: each key works for its own curve, and the untouched point works.
    es.allowed(mint(hdr=header("ES384", kid="ec-384"), key=p384, alg="ES384"))
    es.allowed(mint(hdr=header("ES256", kid="ec-1"), key=EC, alg="ES256"))
    fixed = make(keys={"idp": tokens.jwks(rsa_jwk(RSA, "rsa-1"), _ec_jwk_with(EC, "ec-off-curve"))})
    fixed.allowed(mint(hdr=header("ES256", kid="ec-off-curve"), key=EC, alg="ES256"))


def test_sec_14_weak_keys_are_not_used(make: Callable[..., Setup]) -> None:
    weak = rsa_key("sec-1024", 1024)
    setup = make(keys={"idp": tokens.jwks(rsa_jwk(RSA, "rsa-1"), rsa_jwk(weak, "rsa-1024"))})
    assert [key.kid for key in setup.keyset().keys if key.alg == "RS256"] == ["rsa-1"]
    assert any("1024 bits" in reason for reason in setup.keyset().skipped)
    setup.denied(mint(hdr=header(kid="rsa-1024"), key=weak))  # a 128-byte RSA signature is refused on its shape
    setup.denied(mint(hdr=header(kid=None), key=weak))
    setup.allowed(mint())
    with pytest.raises(ConfigError, match="1024 bits"):
        make(keys={"idp": tokens.jwks(rsa_jwk(weak, "rsa-1024"))})

    short, good = bytes(range(16)), bytes(range(100, 132))
    hs = make(issuers=[issuer_config(algorithms=["HS256"])],
              keys={"idp": tokens.jwks(oct_jwk(short, "short"), oct_jwk(short, "short-no-alg", alg=None),
                                       oct_jwk(good, "good"))})
    assert [key.kid for key in hs.keyset().keys] == ["good"]
    assert sum("16 bytes" in reason for reason in hs.keyset().skipped) == 2
    hs.denied(mint(hdr=header("HS256", kid="short"), key=short, alg="HS256"), detail="unknown kid", lookups=1)
    hs.denied(mint(hdr=header("HS256", kid=None), key=short, alg="HS256"), detail="signature does not verify",
              lookups=1)
    hs.allowed(mint(hdr=header("HS256", kid="good"), key=good, alg="HS256"))


def _self_signed_certificate(key: Any) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.test")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(start).not_valid_after(start + datetime.timedelta(days=36500))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture
def idp() -> Iterator[FakeIdP]:
    with FakeIdP() as server:
        yield server


def test_sec_15_keys_offered_by_the_token_are_never_used_or_fetched(setup: Setup, idp: FakeIdP) -> None:
    idp.jwks = tokens.jwks(rsa_jwk(ATTACKER, "rsa-1"), rsa_jwk(ATTACKER, "attacker"))
    certificate = base64.b64encode(_self_signed_certificate(ATTACKER)).decode()
    offers: dict[str, dict[str, Any]] = {
        "jwk": {"jwk": rsa_jwk(ATTACKER, "rsa-1")},
        "jwk-own-kid": {"jwk": rsa_jwk(ATTACKER, "attacker"), "kid": "attacker"},
        "jku": {"jku": idp.url + "/jwks"},
        "jku-own-kid": {"jku": idp.url + "/jwks", "kid": "attacker"},
        "x5u": {"x5u": idp.url + "/cert.pem"},
        "x5c": {"x5c": [certificate]},
        "x5c-no-kid": {"x5c": [certificate], "kid": None},
        "all": {"jwk": rsa_jwk(ATTACKER, "rsa-1"), "jku": idp.url + "/jwks", "x5u": idp.url + "/cert.pem",
                "x5c": [certificate]},
    }
    for name, members in offers.items():
        kid = members.pop("kid", "rsa-1")
        hdr = header(kid=kid, **members)
        decision = setup.denied(mint(hdr=hdr, key=ATTACKER), lookups=1)
        assert decision.detail in ("signature does not verify", "unknown kid"), name
        # Control: the same header signed by the issuer's key is accepted;
        # the offered keys are ignored, not the reason for the refusal.
        if kid != "attacker":
            setup.allowed(mint(hdr=hdr, key=RSA))
    assert sum(idp.hits.values()) == 0
    # Control for the spy: a fetch would have been counted.
    with urllib.request.urlopen(idp.url + "/jwks", timeout=5) as response:
        assert response.status == 200
    assert idp.hits["/jwks"] == 1


@pytest.mark.parametrize("kid", ["../../x", "../../x.json", "../../../../etc/passwd", "/dev/zero", "' OR '1'='1' --",
                                 "rsa-1' OR 1=1 --", "rsa-1\x00", "RSA-1", " rsa-1", "x" * 10240, "%2e%2e%2fx"])
def test_sec_16_kid_is_only_a_dictionary_key(make: Callable[..., Setup], tmp_path: Path, kid: str) -> None:
    setup = make(issuers=[issuer_config(max_token_size=65536)])
    attacker_set = json.dumps(tokens.jwks(rsa_jwk(ATTACKER, kid=None)))
    for name in ("x", "x.json"):
        (tmp_path / name).write_text(attacker_set)
    setup.denied(mint(hdr=header(kid=kid), key=ATTACKER), detail="unknown kid", lookups=1)
    setup.denied(mint(hdr=header(kid=kid), key=RSA), detail="unknown kid", lookups=1)
    setup.allowed(mint(hdr=header(kid="rsa-1")))


def test_sec_16_kid_names_exactly_one_key(make: Callable[..., Setup]) -> None:
    other = rsa_key("sec-other")
    setup = make(keys={"idp": tokens.jwks(rsa_jwk(RSA, "rsa-1"), rsa_jwk(other, "rsa-2"))})
    setup.allowed(mint(hdr=header(kid="rsa-1"), key=RSA))
    setup.allowed(mint(hdr=header(kid="rsa-2"), key=other))
    # A kid selects its key; another key of the same set is not tried.
    setup.denied(mint(hdr=header(kid="rsa-2"), key=RSA), detail="signature does not verify", lookups=1)


@pytest.mark.parametrize("kid", [123, None, True, ["rsa-1"], {"kid": "rsa-1"}, 1.5])
def test_sec_16_non_string_kid(setup: Setup, kid: Any) -> None:
    hdr = header()
    hdr["kid"] = kid
    setup.denied(mint(hdr=hdr), detail="non-string kid")
    setup.allowed(mint(hdr=header()))


@pytest.mark.parametrize("crit", [["exp"], [], ["unknown-extension"], ["b64"], "exp", None])
def test_sec_17_crit(setup: Setup, crit: Any) -> None:
    extra: dict[str, Any] = {"crit": crit}
    if crit == ["b64"]:
        extra["b64"] = False
    if crit == ["unknown-extension"]:
        extra["unknown-extension"] = True
    setup.denied(mint(hdr=header(**extra)), detail="crit")
    setup.allowed(mint(hdr=header()))


def test_sec_18_key_set_chosen_by_the_configured_issuer_only(make: Callable[..., Setup]) -> None:
    key_a, key_b = rsa_key("sec-a"), rsa_key("sec-b")
    setup = make(
        issuers=[issuer_config("a", issuer="https://a.test"), issuer_config("b", issuer="https://b.test")],
        keys={"a": tokens.jwks(rsa_jwk(key_a, "a-1")), "b": tokens.jwks(rsa_jwk(key_b, "b-1"))},
    )
    a_claims = claims(iss="https://a.test")
    for kid, detail in (("b-1", "unknown kid"), (None, "signature does not verify"),
                        ("a-1", "signature does not verify")):
        setup.denied(mint(a_claims, header(kid=kid), key=key_b), detail=detail, lookups=1)
    assert setup.counters["b"].lookups == 0  # B's keys were never consulted
    assert setup.counters["a"].lookups == 3
    setup.allowed(mint(a_claims, header(kid="a-1"), key=key_a))
    setup.allowed(mint(claims(iss="https://b.test"), header(kid="b-1"), key=key_b))


@pytest.mark.parametrize("members", [{"cty": "JWT"}, {"cty": "jwt"}, {"cty": "application/jwt"}, {"enc": "A256GCM"},
                                     {"enc": "A128CBC-HS256", "zip": "DEF"}, {"zip": "DEF"}],
                         ids=["cty-JWT", "cty-jwt", "cty-application-jwt", "enc", "enc-and-zip", "zip"])
def test_sec_19_nested_jwt_or_jwe_header(setup: Setup, members: dict[str, Any]) -> None:
    setup.denied(mint(hdr=header(**members)))
    setup.allowed(mint(hdr=header()))


def test_sec_19_nested_token_as_payload(setup: Setup) -> None:
    inner = mint()
    setup.denied(mint(inner.encode(), header(cty="JWT")), detail="payload is not a valid JSON object")


@pytest.mark.parametrize(("name", "value"), [
    ("exp", None), ("exp", "1900000600"), ("exp", "tomorrow"), ("exp", True), ("exp", False), ("exp", "null"),
    ("exp", [NOW + 600]), ("exp", {"t": NOW + 600}),
    ("nbf", "1899999000"), ("nbf", True), ("nbf", "null"), ("nbf", [NOW]),
    ("iat", "1899999990"), ("iat", False), ("iat", "null"), ("iat", {}),
])
def test_sec_20_missing_or_non_numeric_times(setup: Setup, name: str, value: Any) -> None:
    if value is None:
        token = mint(claims(**{name: None}))
    elif value == "null":
        token = mint(raw_claims(f'"{name}":null', **{name: None}))
    else:
        token = mint(claims(**{name: value}))
    setup.denied(token, detail=name)
    setup.allowed(mint(claims(exp=NOW + 600.25, nbf=NOW - 5, iat=NOW - 10.5)))


def test_sec_21_time_with_the_configured_leeway(make: Callable[..., Setup]) -> None:
    setup = make()  # leeway 30s
    setup.denied(mint(claims(exp=NOW - 30)), "expired_token", detail="expired")
    setup.denied(mint(claims(exp=NOW - 3600)), "expired_token", detail="expired")
    setup.allowed(mint(claims(exp=NOW - 29)))
    setup.denied(mint(claims(nbf=NOW + 31)), detail="nbf")
    setup.allowed(mint(claims(nbf=NOW + 30)))
    setup.denied(mint(claims(iat=NOW + 31)), detail="iat")
    setup.allowed(mint(claims(iat=NOW + 30)))

    strict = make(issuers=[issuer_config(leeway="0s")])
    strict.denied(mint(claims(exp=NOW)), "expired_token")
    strict.allowed(mint(claims(exp=NOW + 1)))
    strict.denied(mint(claims(nbf=NOW + 1)), detail="nbf")
    strict.allowed(mint(claims(nbf=NOW)))

    lenient = make(issuers=[issuer_config(leeway="2m")])
    lenient.allowed(mint(claims(exp=NOW - 119)))
    lenient.denied(mint(claims(exp=NOW - 120)), "expired_token")
    lenient.allowed(mint(claims(nbf=NOW + 120, iat=NOW + 120)))
    lenient.denied(mint(claims(iat=NOW + 121)), detail="iat")


@pytest.mark.parametrize("aud", [None, "", [], [""], "apix", "ap", "API", " api", 123, True, [123], ["apix", "ap"],
                                 ["api", 123], {"api": True}, "null"])
def test_sec_22_audience(setup: Setup, aud: Any) -> None:
    if aud is None:
        token = mint(claims(aud=None))
    elif aud == "null":
        token = mint(raw_claims('"aud":null', aud=None))
    else:
        token = mint(claims(aud=aud))
    setup.denied(token, detail="aud")
    setup.allowed(mint(claims(aud="api")))
    setup.allowed(mint(claims(aud=["other", "api"])))
    setup.allowed(mint(claims(aud=["api"])))


@pytest.mark.parametrize(("iss", "reason"), [
    ("https://evil.test", "unknown_issuer"),
    ("https://idp.tes", "unknown_issuer"),
    ("https://idp", "unknown_issuer"),
    ("https://idp.test.evil.com", "unknown_issuer"),
    ("https://idp.test/", "unknown_issuer"),
    ("https://idp.test/realms/x", "unknown_issuer"),
    ("HTTPS://IDP.TEST", "unknown_issuer"),
    ("https://idp.test ", "unknown_issuer"),
    ("", "unknown_issuer"),
    (["https://idp.test"], "invalid_token"),
    ({"url": "https://idp.test"}, "invalid_token"),
    (123, "invalid_token"),
    (None, "invalid_token"),
])
def test_sec_23_issuer(make: Callable[..., Setup], iss: Any, reason: str) -> None:
    setup = make(issuers=[issuer_config(), issuer_config("other", issuer="https://other.test")],
                 keys={"idp": default_keys(), "other": default_keys()})
    setup.denied(mint(claims(iss=iss)), reason, detail="iss" if reason == "invalid_token" else None)
    setup.allowed(mint())
    setup.allowed(mint(claims(iss="https://other.test")))


def test_sec_23_unknown_issuer_only_when_no_issuer_has_it(make: Callable[..., Setup]) -> None:
    setup = make(issuers=[issuer_config(),
                          issuer_config("other", issuer="https://other.test", audiences=["other-api"])],
                 keys={"idp": default_keys(), "other": default_keys()})
    # 'other' is configured: its failures are invalid_token, never unknown_issuer.
    setup.denied(mint(claims(iss="https://other.test")), "invalid_token", detail="audience")
    setup.denied(mint(claims(iss="https://other.test", aud="other-api"), key=ATTACKER), "invalid_token", lookups=1)
    setup.denied(mint(claims(iss="https://other.test", aud="other-api", exp=NOW - 60)), "expired_token")
    setup.allowed(mint(claims(iss="https://other.test", aud="other-api")))


@pytest.mark.parametrize(("typ", "accepted"), [
    ("at+jwt", True), ("application/at+JWT", True), ("AT+JWT", True), ("Application/At+Jwt", True),
    ("JWT", False), (None, False), ("", False), ("at+jwt ", False), ("application/jwt", False), ("at+jwt+x", False),
    ("application/", False), (123, False), (["at+jwt"], False),
])
def test_sec_24_typ_restriction(make: Callable[..., Setup], typ: Any, accepted: bool) -> None:
    restricted = make(issuers=[issuer_config(token_types=["at+jwt"])])
    hdr = header()
    hdr.pop("typ")
    if typ is not None:
        hdr["typ"] = typ
    token = mint(hdr=hdr)
    if accepted:
        restricted.allowed(token)
    else:
        restricted.denied(token, detail="typ")
        restricted.allowed(mint(hdr=header(typ="at+jwt")))
    unrestricted = make()
    unrestricted.allowed(mint(hdr=header(typ="JWT")))
    if isinstance(typ, str):
        unrestricted.allowed(token)
