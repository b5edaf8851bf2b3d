"""The signature layer: strict parsing of a compact JWS and signature checks.

Everything a token says is distrusted until checked here (docs/security.md A and B):
the size is capped before any decoding, base64url must be canonical, header
and payload must be JSON objects without duplicate members, non-finite numbers,
lone surrogates or deep nesting, and the signature is checked with a key the
configuration chose, for an algorithm the configuration allows. PyJWT's
algorithm objects (over ``cryptography``) do the cryptography; PyJWT's own
``decode`` is not used, so none of its defaults decide anything.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from sys import intern
from types import MappingProxyType
from typing import Any, NamedTuple

from jwt.algorithms import Algorithm, get_default_algorithms

from authz.errors import InvalidToken

DEFAULT_MAX_TOKEN_SIZE = 8192
MAX_JSON_DEPTH = 16
#: RSA moduli accepted for verification (smaller keys are skipped when a key
#: set is read; larger ones make verification needlessly slow).
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192

_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_INDEX = {char: index for index, char in enumerate(_B64_ALPHABET)}
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_TO_STANDARD_B64 = bytes.maketrans(b"-_", b"+/")

#: Algorithms authz implements; configs may allow any subset.
ALGORITHMS: dict[str, Algorithm] = {
    name: algorithm
    for name, algorithm in get_default_algorithms().items()
    if name in {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                "ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512"}
}

_HMAC_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}

# Group orders of the NIST curves (SEC 2), for the r/s range checks of ECDSA.
_CURVE_ORDERS = {
    "ES256": (32, 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551),
    "ES384": (48, 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973),
    "ES512": (66, 0x01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409),  # noqa: E501 (one literal)
}


class CompactJws(NamedTuple):
    """A compact JWS whose header is checked JSON but whose payload is still
    bytes: the signature layer, for payloads that are not JWT claims. The
    header is read-only: one issuer's tokens share it (see :func:`_header`)."""

    header: Mapping[str, Any]
    payload: bytes
    signing_input: bytes
    signature: bytes


class ParsedToken(NamedTuple):
    header: Mapping[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url, as JOSE writes every segment and key member."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """Decode canonical unpadded base64url; anything else raises InvalidToken."""
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise InvalidToken("segment is not canonical base64url")
    # Canonical means the unused low bits of the last character are zero, so
    # that exactly one string encodes each byte sequence.
    tail = len(segment) % 4
    if tail and _B64_INDEX[segment[-1]] & (0x0F if tail == 2 else 0x03):
        raise InvalidToken("segment is not canonical base64url")
    try:
        return binascii.a2b_base64(segment.encode("ascii").translate(_TO_STANDARD_B64) + b"=="[: -len(segment) % 4])
    except (binascii.Error, ValueError):
        raise InvalidToken("segment is not canonical base64url") from None


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Member names are interned: verified claims stay in the token cache,
    # and "iss", "aud", "exp", ... would otherwise be stored once per token.
    obj = {intern(name) if len(name) <= 64 else name: value for name, value in pairs}
    if len(obj) != len(pairs):
        raise ValueError("duplicate member")
    return obj


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("non-finite number")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_values(value: Any, depth: int) -> None:
    """``depth`` counts containers: the header or payload object is 1, and
    at most MAX_JSON_DEPTH objects or arrays may nest."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise ValueError("lone surrogate in string")
    elif isinstance(value, dict | list):
        if depth > MAX_JSON_DEPTH:
            raise ValueError("nested too deeply")
        if isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):
                    raise ValueError("lone surrogate in member name")
                _check_values(item, depth + 1)
        else:
            for item in value:
                _check_values(item, depth + 1)


_DECODER = json.JSONDecoder(
    object_pairs_hook=_object_without_duplicates,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
)


def strict_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse a JWS header or payload: UTF-8 JSON object, strictly."""
    try:
        text = data.decode("utf-8")
        obj = _DECODER.decode(text)
        if not isinstance(obj, dict):
            raise ValueError("not an object")
        # Walk the values only when the text could hold what the walk
        # refuses: a lone surrogate can only arrive as a \u escape (the
        # UTF-8 decode refuses raw ones), and nesting deeper than
        # MAX_JSON_DEPTH needs more brackets than that.
        if "\\u" in text or text.count("{") + text.count("[") > MAX_JSON_DEPTH:
            _check_values(obj, 1)
    except (ValueError, RecursionError) as exc:
        raise InvalidToken(f"{what} is not a valid JSON object ({exc.__class__.__name__})") from None
    return obj


def decode_compact(token: str, *, max_size: int = DEFAULT_MAX_TOKEN_SIZE) -> CompactJws:
    """Split a compact JWS and decode its segments, leaving the payload as
    bytes. Raises InvalidToken for any malformation: a token over
    ``max_size`` (checked before anything is decoded), a segment count other
    than 3 (a JWE has 5), an empty header or signature, non-canonical
    base64url, or a header that is not a strict JSON object."""
    if len(token) > max_size:
        raise InvalidToken("token longer than the configured maximum")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken(f"token has {len(parts)} segments, not 3")
    header_b64, payload_b64, signature_b64 = parts
    if not header_b64 or not signature_b64:
        raise InvalidToken("empty token segment")
    header = _header(header_b64) if len(header_b64) <= _SHARED_HEADER_CHARS else _parse_header(header_b64)
    # An empty payload is a valid JWS (RFC 7515); it is never a JWT, which
    # parse_compact finds when it reads the payload as JSON.
    payload = b64url_decode(payload_b64) if payload_b64 else b""
    signature = b64url_decode(signature_b64)
    return CompactJws(header, payload, f"{header_b64}.{payload_b64}".encode("ascii"), signature)


def _parse_header(segment: str) -> Mapping[str, Any]:
    return MappingProxyType(strict_json_object(b64url_decode(segment), "header"))


#: One issuer signs every token with the same few headers (alg, kid, typ), so
#: a parsed header is kept for the next token that carries the same text. A
#: refused header raises again each time (exceptions are not cached).
_SHARED_HEADER_CHARS = 512
_header = lru_cache(maxsize=256)(_parse_header)


def parse_compact(token: str, *, max_size: int = DEFAULT_MAX_TOKEN_SIZE) -> ParsedToken:
    """Split and decode a compact JWS whose payload is a JSON object (a JWT);
    raises InvalidToken for any malformation (see :func:`decode_compact`)."""
    jws = decode_compact(token, max_size=max_size)
    payload = strict_json_object(jws.payload, "payload")
    return ParsedToken(jws.header, payload, jws.signing_input, jws.signature)


def check_header(header: Mapping[str, Any], allowed: frozenset[str]) -> str:
    """Validate the protected header; return the algorithm.

    ``allowed`` is the issuer's allow-list from config. Nested JWTs, JWE
    members and any ``crit`` extension are refused (none are implemented).
    """
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise InvalidToken("missing or non-string alg")
    if alg not in allowed:
        raise InvalidToken("alg not allowed for this issuer")
    if "crit" in header:
        raise InvalidToken("crit header names extensions authz does not implement")
    if "enc" in header or "zip" in header:
        raise InvalidToken("JWE header members in a JWS")
    if "cty" in header:
        raise InvalidToken("cty header (nested or non-claims token)")
    if "kid" in header and not isinstance(header["kid"], str):
        raise InvalidToken("non-string kid")
    if "typ" in header and not isinstance(header["typ"], str):
        raise InvalidToken("non-string typ")
    return alg


def check_signature_shape(alg: str, signature: bytes) -> None:
    """Refuse a signature whose shape is wrong for ``alg`` whatever the key,
    before any key is looked up: ECDSA r and s in [1, n-1] at the curve's
    fixed width, an HMAC of the hash's length, an RSA signature at least as
    long as the smallest modulus accepted, an EdDSA signature of Ed25519's
    or Ed448's length. Raises InvalidToken."""
    if alg in _CURVE_ORDERS:
        ok = signature_shape_ok(alg, signature, None)
    elif alg in _HMAC_BYTES:
        ok = len(signature) == _HMAC_BYTES[alg]
    elif alg.startswith(("RS", "PS")):
        ok = MIN_RSA_BITS // 8 <= len(signature) <= MAX_RSA_BITS // 8
    elif alg == "EdDSA":
        ok = len(signature) in (64, 114)
    else:
        ok = False
    if not ok:
        raise InvalidToken(f"signature has the wrong shape for {alg}")


def signature_shape_ok(alg: str, signature: bytes, key_bytes: int | None) -> bool:
    """Length and range checks done before the cryptography: ECDSA r and s must
    be in [1, n-1] at the curve's fixed width; RSA signatures are exactly as
    long as the modulus; EdDSA signatures have the curve's length."""
    order = _CURVE_ORDERS.get(alg)
    if order is not None:
        width, n = order
        if len(signature) != 2 * width:
            return False
        r = int.from_bytes(signature[:width], "big")
        s = int.from_bytes(signature[width:], "big")
        return 0 < r < n and 0 < s < n
    if alg.startswith(("RS", "PS")):
        return key_bytes is not None and len(signature) == key_bytes
    if alg == "EdDSA":
        return key_bytes is not None and len(signature) == key_bytes
    return len(signature) > 0
