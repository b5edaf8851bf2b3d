"""The token parser and verifier (authz.identity.jws, authz.identity.jwt) on
random text, on valid tokens with a byte flipped or a character changed, and
on properly signed tokens with random headers and claims: every input is an
identity or a CredentialError with its reason, never another exception; and
a changed token is never accepted, even right after the original was."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from authz.config import load_policy
from authz.errors import OUTCOMES, CredentialError, InvalidToken
from authz.identity.base import Identity
from authz.identity.jws import parse_compact
from authz.identity.jwt import JwtSource
from authz.request import Request
from authz.server.cache import VerifiedTokenCache
from testkit.tokens import claims, ec_key, public_jwk, token
from tests.fuzz import budget
from tests.fuzz.strategies import json_values, write_policy

ISSUERS = """
  - name: edge
    issuer: https://edge.example.com
    audiences: [orders-api]
    jwks_file: edge.jwks.json
    algorithms: [ES256]
    roles_claim: groups
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> JwtSource:
    """The bearer-token source of the fuzz policy with a second, ES256, issuer."""
    directory = tmp_path_factory.mktemp("fuzz-jwt")
    path = write_policy(directory)
    (directory / "edge.jwks.json").write_text(json.dumps({"keys": [public_jwk(ec_key("edge"), kid="edge-1",
                                                                              alg="ES256")]}))
    path.write_text(path.read_text().replace("api_keys:", ISSUERS.lstrip("\n") + "api_keys:", 1))
    found = [s for s in load_policy(str(path)).credential_sources if isinstance(s, JwtSource) and s.location.header]
    assert len(found) == 1 and len(found[0].issuers) == 2
    return found[0]


NOW = time.time()
ORIGINALS = [
    token(claims(exp=int(NOW) + 3600)),
    token(claims(iss="https://edge.example.com", exp=int(NOW) + 3600), key=ec_key("edge"), alg="ES256", kid="edge-1"),
]


def verified(source: JwtSource, text: str, cache: VerifiedTokenCache | None = None) -> Identity | CredentialError:
    """What the source makes of a bearer token: an identity, or the
    CredentialError it raised (a 401 with a reason). Anything else fails."""
    request = Request(method="GET", path="/", headers={"authorization": f"Bearer {text}"})
    try:
        identity = source.authenticate(request, now=NOW, cache=cache)
    except CredentialError as error:
        assert OUTCOMES[error.reason].http_status == 401
        assert error.retry is None  # key files: nothing to wait for
        event(f"refused: {error.reason.value}")
        return error
    assert identity is not None
    event("accepted")
    return identity


def _segments(text: str) -> list[bytes]:
    return [base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in text.split(".")]


def _encode(part: bytes) -> str:
    return base64.urlsafe_b64encode(part).rstrip(b"=").decode()


def _respellings(segment: str) -> list[str]:
    """Other spellings a lenient base64 decoder reads as the same bytes:
    padding, the standard alphabet, whitespace, and a last character whose
    unused low bits are set."""
    out = [segment + "=" * (-len(segment) % 4 or 4), segment.replace("-", "+").replace("_", "/"), segment + "\n",
           segment[:1] + " " + segment[1:]]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused = {2: 0x0F, 3: 0x03}.get(len(segment) % 4, 0)
    if unused:
        last = alphabet.index(segment[-1])
        out += [segment[:-1] + alphabet[last | bits] for bits in range(1, unused + 1) if last | bits != last]
    return [spelling for spelling in out if spelling != segment]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str]:
    """(original, a changed copy): a bit flipped in a decoded segment, a
    segment spelled differently for the same bytes, a character of the text
    replaced, inserted or removed, segments dropped, repeated or swapped, or
    the header replaced by random JSON."""
    original = draw(st.sampled_from(ORIGINALS))
    parts = original.split(".")
    how = draw(st.sampled_from(["flip", "respell", "char", "insert", "delete", "segments", "header"]))
    if how == "respell":
        index = draw(st.integers(0, 2))
        parts[index] = draw(st.sampled_from(_respellings(parts[index])))
        text = ".".join(parts)
    elif how == "flip":
        index = draw(st.integers(0, 2))
        data = bytearray(_segments(original)[index])
        at = draw(st.integers(0, len(data) - 1))
        data[at] ^= 1 << draw(st.integers(0, 7))
        parts[index] = _encode(bytes(data))
        text = ".".join(parts)
    elif how in ("char", "insert", "delete"):
        at = draw(st.integers(0, len(original) - 1))
        char = draw(st.one_of(st.sampled_from("AQgw-_.=+/ \x00é"), st.characters()))
        tail = original[at + 1:] if how != "insert" else original[at:]
        text = original[:at] + ("" if how == "delete" else char) + tail
    elif how == "segments":
        text = ".".join(draw(st.lists(st.sampled_from(parts), max_size=5)))
    else:
        header = draw(st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "enc", "cty", "jwk", "jku", "b64"]),
                                      json_values(), max_size=4))
        text = ".".join([_encode(json.dumps(header).encode()), parts[1], parts[2]])
    return original, text


@budget(500)
@given(text=st.one_of(st.text(max_size=60), st.from_regex(r"[A-Za-z0-9_\-]{0,40}(\.[A-Za-z0-9_\-=]{0,40}){0,4}")))
def test_random_text_is_refused(source: JwtSource, text: str) -> None:
    assert isinstance(verified(source, text), CredentialError)
    with contextlib.suppress(InvalidToken):
        parse_compact(text)


@budget(500)
@given(case=mutated())
def test_a_changed_token_is_never_accepted(source: JwtSource, case: tuple[str, str]) -> None:
    original, text = case
    cache = VerifiedTokenCache(100, time=time.time, monotonic=time.monotonic)
    assert isinstance(verified(source, original, cache), Identity)  # now in the token cache
    outcome = verified(source, text, cache)
    if text != original:
        assert isinstance(outcome, CredentialError), text
    assert isinstance(verified(source, text), type(outcome))


@st.composite
def signed(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(header, payload, token) signed with the RS256 issuer's real key: a
    header and claims that are mostly right, with random members."""
    header: dict[str, Any] = {"alg": "RS256", "kid": "corp-2026", "typ": "JWT"}
    header.update(draw(st.one_of(st.just({}), st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "enc", "zip", "cty", "x5c"]), json_values(), max_size=2))))
    payload = claims(exp=int(NOW) + 3600)
    payload.update(draw(st.one_of(st.just({}), st.dictionaries(
        st.sampled_from(["iss", "aud", "exp", "nbf", "iat", "sub", "groups", "scope"]), json_values(), max_size=3))))
    for name in draw(st.one_of(st.just([]), st.lists(st.sampled_from(["iss", "aud", "exp", "sub"]), max_size=2))):
        payload.pop(name, None)
    return header, payload, token(payload, header=header)


@budget(200)
@given(case=signed())
def test_a_signed_token_is_accepted_only_when_header_and_claims_are_right(
        source: JwtSource, case: tuple[dict[str, Any], dict[str, Any], str]) -> None:
    header, payload, text = case
    outcome = verified(source, text)
    if isinstance(outcome, Identity):
        assert header["alg"] == "RS256" and header["kid"] == "corp-2026"
        assert not {"crit", "enc", "zip", "cty"} & set(header)
        assert payload["iss"] == "https://idp.example.com"
        assert payload["aud"] == "orders-api" or "orders-api" in payload["aud"]
        assert isinstance(payload["exp"], int | float) and payload["exp"] > NOW - 30
        assert outcome.subject == payload.get("sub")
