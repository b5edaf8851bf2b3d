"""C2SP Wycheproof JWS and JWK vectors, run through our signature layer.

The signature layer is what decides a token's signature before any claim is
read: strict compact parsing (:func:`authz.identity.jws.decode_compact`),
the protected-header checks against an allow-list (``check_header``), the
key-independent signature shape (``check_signature_shape``), key-set parsing
(``parse_jwks``) and key selection plus verification (``KeySet.verify``).
The vectors' payloads are not JWT claims (``foo``, ``Test``, empty, binary),
so claim checks are not run; that :func:`parse_compact` refuses every
non-JSON payload is asserted separately.

The allow-list for a vector is the algorithm its key declares plus the one
its JWS header names (when authz implements it): the most permissive
configuration anyone could write for that key and token, so no rejection here
is merely the allow-list's doing. Keys are read as a local ``jwks_file``
would be (``allow_symmetric=True``): the only place authz accepts HMAC
secrets.

Outcomes:

- every ``invalid`` vector is rejected (two are byte-identical to a valid
  vector in this copy of the data: see ``DEFECTIVE``);
- every ``valid`` vector is accepted, except those in ``DELIBERATE_REFUSALS``,
  each with its reason; a listed vector that is accepted fails the test, so
  the list cannot outlive its reason;
- ``acceptable`` vectors: neither file has any (asserted), so none is
  refused. ``ACCEPTABLE_REFUSED`` is where one we refuse would be explained.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from authz.errors import InvalidToken
from authz.identity.jws import (
    ALGORITHMS,
    check_header,
    check_signature_shape,
    decode_compact,
    parse_compact,
)
from authz.identity.keys import parse_jwks
from testkit.paths import WYCHEPROOF

FILES = {"jws": "json_web_signature_test.json", "jwk": "json_web_key_test.json"}

#: Valid vectors authz refuses on purpose, by (file, tcId), with the reason.
DELIBERATE_REFUSALS: dict[tuple[str, int], str] = {
    # RFC 7520 Figure 20 signs with PS384, but the vector's key carries
    # "alg": "PS256". A JWK's alg restricts the key to that algorithm
    # (RFC 7517 section 4.4), and authz binds every key to exactly one.
    ("jws", 346): "key declares alg PS256; the JWS uses PS384",
    ("jws", 350): "key declares alg PS256; the JWS uses PS384",
    # RFC 7520 Figure 27's key carries "alg": "ES521", which is no JWA
    # algorithm (P-521 is ES512). An unknown alg makes the key unusable.
    ("jws", 347): "key declares the unregistered alg ES521",
    ("jws", 351): "key declares the unregistered alg ES521",
    # The MAC covers the segments without the inserted '?'. authz accepts
    # only canonical base64url (docs/security.md 2): a decoder that skips bad
    # characters makes tokens malleable.
    ("jws", 372): "'?' inside the header segment is not base64url",
    ("jws", 373): "'?' inside the payload segment is not base64url",
}

#: Acceptable vectors authz refuses, with the reason (there are none in these files).
ACCEPTABLE_REFUSED: dict[tuple[str, int], str] = {}

#: Invalid vectors that this copy of the data makes byte-identical to a valid
#: one (the padding they are named for is absent), so no verifier can both
#: accept the valid vector and reject them. They are checked to be identical.
DEFECTIVE: dict[tuple[str, int], int] = {
    ("jws", 367): 357,  # invalidBase64Padding
    ("jws", 370): 357,  # invalidBase64PaddingInPayload
}


@dataclass(frozen=True)
class Vector:
    file: str
    group_index: int
    group: dict[str, Any]
    test: dict[str, Any]

    @property
    def key(self) -> tuple[str, int]:
        return (self.file, self.test["tcId"])

    @property
    def id(self) -> str:
        return (f"{self.file}-g{self.group_index:02d}-{self.group['comment']}"
                f"-tc{self.test['tcId']}-{self.test['comment']}")

    def jwks(self) -> dict[str, Any]:
        """The verification keys: the public set or key if given, else the
        private one (HMAC secrets). JWS groups hold one key, JWK groups a set."""
        material = self.group.get("public") or self.group["private"]
        return material if "keys" in material else {"keys": [material]}


def _load(file: str) -> tuple[dict[str, Any], list[Vector]]:
    document = json.loads((WYCHEPROOF / FILES[file]).read_text())
    vectors = [
        Vector(file, index, group, test)
        for index, group in enumerate(document["testGroups"])
        for test in group["tests"]
    ]
    return document, vectors


DOCUMENTS: dict[str, dict[str, Any]] = {}
VECTOR_LIST: list[Vector] = []
for _file in FILES:
    DOCUMENTS[_file], _vectors = _load(_file)
    VECTOR_LIST.extend(_vectors)
BY_KEY = {vector.key: vector for vector in VECTOR_LIST}


@dataclass(frozen=True)
class Outcome:
    accepted: bool
    stage: str  # where it was decided: parse, keys, header, shape, signature, accepted
    detail: str = ""


def _allow_list(jwks: dict[str, Any], header: Mapping[str, Any]) -> frozenset[str]:
    declared = {key.get("alg") for key in jwks["keys"] if isinstance(key, dict)}
    declared.add(header.get("alg"))
    return frozenset(alg for alg in declared if isinstance(alg, str) and alg in ALGORITHMS)


def signature_layer(jws: str, jwks: dict[str, Any], *, local: bool = True) -> Outcome:
    """Our verdict on one compact JWS and key set, without claim checks.
    ``local``: read the keys as a jwks_file (else as a remote set)."""
    try:
        token = decode_compact(jws)
    except InvalidToken as exc:
        return Outcome(False, "parse", exc.detail)
    allowed = _allow_list(jwks, token.header)
    try:
        keys = parse_jwks(jwks, allowed, allow_symmetric=local)
    except ValueError as exc:
        return Outcome(False, "keys", str(exc))
    try:
        alg = check_header(token.header, allowed)
    except InvalidToken as exc:
        return Outcome(False, "header", exc.detail)
    try:
        check_signature_shape(alg, token.signature)
    except InvalidToken as exc:
        return Outcome(False, "shape", exc.detail)
    kid = token.header.get("kid")
    if not keys.verify(kid if isinstance(kid, str) else None, alg, token.signing_input, token.signature):
        return Outcome(False, "signature")
    return Outcome(True, "accepted")


def _payload_is_json_object(jws: str) -> bool:
    try:
        value = json.loads(decode_compact(jws).payload)
    except (InvalidToken, ValueError):
        return False
    return isinstance(value, dict)


@pytest.mark.parametrize("vector", VECTOR_LIST, ids=lambda v: v.id)
def test_vector(vector: Vector) -> None:
    test = vector.test
    outcome = signature_layer(test["jws"], vector.jwks())
    if test["result"] == "invalid":
        if vector.key in DEFECTIVE:
            twin = BY_KEY[("jws", DEFECTIVE[vector.key])]
            assert test["jws"] == twin.test["jws"] and twin.test["result"] == "valid"
            assert outcome.accepted, "accepted like its valid twin"
            return
        assert not outcome.accepted, f"invalid vector accepted: {test['comment']}"
    elif vector.key in DELIBERATE_REFUSALS or vector.key in ACCEPTABLE_REFUSED:
        assert not outcome.accepted, "listed as refused on purpose but accepted: drop it from the list"
    elif test["result"] == "valid":
        assert outcome.accepted, f"valid vector refused at {outcome.stage}: {outcome.detail}"


@pytest.mark.parametrize("vector", [
    v for v in VECTOR_LIST
    if v.test["result"] == "valid" and v.key not in DELIBERATE_REFUSALS
    and any(k.get("kty") == "oct" for k in v.jwks()["keys"])
], ids=lambda v: v.id)
def test_hmac_vector_from_a_remote_key_set(vector: Vector) -> None:
    """HMAC secrets are accepted from a local file only: the same valid
    vectors are refused when the key set is remote (docs/security.md 25)."""
    assert signature_layer(vector.test["jws"], vector.jwks()).accepted
    outcome = signature_layer(vector.test["jws"], vector.jwks(), local=False)
    assert (outcome.accepted, outcome.stage) == (False, "keys")


@pytest.mark.parametrize("vector", [v for v in VECTOR_LIST if v.test["result"] == "valid"], ids=lambda v: v.id)
def test_valid_vector_as_a_jwt(vector: Vector) -> None:
    """As a JWT, a payload must be a JSON object: parse_compact refuses the
    rest, a deliberate refusal for every valid vector whose payload is not."""
    jws = vector.test["jws"]
    try:
        parse_compact(jws)
    except InvalidToken:
        parsed = False
    else:
        parsed = True
    assert parsed is _payload_is_json_object(jws)


def test_the_data_is_what_this_file_expects() -> None:
    for file, document in DOCUMENTS.items():
        vectors = [v for v in VECTOR_LIST if v.file == file]
        assert len(vectors) == document["numberOfTests"]
        assert {v.test["result"] for v in vectors} <= {"valid", "invalid", "acceptable"}
        assert len({v.test["tcId"] for v in vectors}) == len(vectors)
    assert not [v for v in VECTOR_LIST if v.test["result"] == "acceptable"]
    for key in DELIBERATE_REFUSALS:
        assert BY_KEY[key].test["result"] == "valid", key
    for key in ACCEPTABLE_REFUSED:
        assert BY_KEY[key].test["result"] == "acceptable", key
    for key in DEFECTIVE:
        assert BY_KEY[key].test["result"] == "invalid", key


def test_summary() -> None:
    """Lists what we refuse on purpose (shown with ``pytest -rA`` or ``-s``)."""
    lines = ["Wycheproof vectors refused on purpose:"]
    for (file, tc_id), reason in sorted(DELIBERATE_REFUSALS.items()):
        vector = BY_KEY[(file, tc_id)]
        outcome = signature_layer(vector.test["jws"], vector.jwks())
        assert not outcome.accepted
        lines.append(f"  {file} tcId {tc_id} ({vector.test['comment']}): {reason} [refused at {outcome.stage}]")
    refused_as_jwt = [v for v in VECTOR_LIST if v.test["result"] == "valid"
                      and not _payload_is_json_object(v.test["jws"])]
    lines.append(f"  and as JWTs, all {len(refused_as_jwt)} valid vectors: their payloads are not JSON objects")
    lines.append(f"Acceptable vectors refused: {len(ACCEPTABLE_REFUSED)}")
    for (file, tc_id), target in sorted(DEFECTIVE.items()):
        lines.append(f"Defective invalid vector {file} tcId {tc_id}: identical to valid tcId {target}; accepted")
    print("\n".join(lines))
