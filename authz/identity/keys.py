"""JSON Web Keys: parsed key by key into keys that verify one algorithm each.

A key set is never trusted as a whole: every key is checked on its own and an
unusable key is skipped with a reason, so one bad key never poisons the rest
(SECURITY.md D). A key without ``alg`` is bound only to the algorithms the
issuer's config allows for its type, never to a library default.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import Algorithm

from authz.errors import InvalidToken
from authz.identity.jws import ALGORITHMS, b64url_decode, signature_shape_ok

MIN_RSA_BITS = 2048
MAX_KEYS_TRIED = 8

_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_B64_MEMBERS = ("n", "e", "x", "y", "k", "d", "p", "q", "dp", "dq", "qi")
# RFC 7638 required members, for the thumbprint that identifies key material.
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "oct": ("k", "kty")}


class SkippedKey(ValueError):
    """A key in a set that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True, eq=False)
class VerifyKey:
    kid: str | None
    alg: str
    key: Any
    algorithm: Algorithm
    thumbprint: str
    signature_bytes: int | None  # fixed signature length where the alg has one

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        if not signature_shape_ok(self.alg, signature, self.signature_bytes):
            return False
        try:
            return bool(self.algorithm.verify(signing_input, self.key, signature))
        except Exception:
            # The cryptography layer refusing an input is a failed verification.
            return False


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url without padding)."""
    members = _THUMBPRINT_MEMBERS[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _compatible_algs(jwk: dict[str, Any], allowed: Iterable[str]) -> list[str]:
    kty = jwk.get("kty")
    out = []
    for alg in allowed:
        if (kty == "RSA" and alg in _RSA_ALGS) or (kty == "EC" and _EC_CURVES.get(alg) == jwk.get("crv")):
            out.append(alg)
        elif (kty == "OKP" and alg == "EdDSA" and jwk.get("crv") in ("Ed25519", "Ed448")) or (kty == "oct" and alg in _HMAC_MIN_BYTES):
            out.append(alg)
    return out


def _public(key: Any) -> Any:
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key.public_key()
    return key


def parse_jwk(jwk: Any, allowed: Iterable[str], *, allow_symmetric: bool) -> list[VerifyKey]:
    """The verify keys one JWK yields, one per usable algorithm.

    Raises :class:`SkippedKey` when the key cannot be used at all.
    """
    if not isinstance(jwk, dict):
        raise SkippedKey("not a JSON object")
    kty = jwk.get("kty")
    if kty not in ("RSA", "EC", "OKP", "oct"):
        raise SkippedKey(f"unsupported kty {kty!r}")
    if kty == "oct" and not allow_symmetric:
        raise SkippedKey("symmetric (oct) key in a remote key set")
    if "use" in jwk and jwk["use"] != "sig":
        raise SkippedKey("use is not 'sig'")
    if "key_ops" in jwk:
        ops = jwk["key_ops"]
        if not isinstance(ops, list) or "verify" not in ops:
            raise SkippedKey("key_ops does not include 'verify'")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise SkippedKey("non-string kid")
    for member in _B64_MEMBERS:
        if member in jwk:
            value = jwk[member]
            try:
                if not isinstance(value, str):
                    raise InvalidToken("not a string")
                b64url_decode(value)
            except InvalidToken:
                raise SkippedKey(f"member {member!r} is not canonical base64url") from None
    allowed = list(allowed)
    if "alg" in jwk:
        alg = jwk["alg"]
        if not isinstance(alg, str) or alg not in allowed:
            raise SkippedKey(f"alg {alg!r} is not allowed for this issuer")
        if alg not in _compatible_algs(jwk, [alg]):
            raise SkippedKey(f"alg {alg!r} does not fit kty {kty!r} / crv {jwk.get('crv')!r}")
        algs = [alg]
    else:
        algs = _compatible_algs(jwk, allowed)
        if not algs:
            raise SkippedKey(f"no allowed algorithm fits kty {kty!r} / crv {jwk.get('crv')!r}")
    try:
        print_ = thumbprint(jwk)
    except (KeyError, TypeError):
        raise SkippedKey("missing required members") from None
    out = []
    for alg in algs:
        algorithm = ALGORITHMS[alg]
        try:
            key = _public(algorithm.from_jwk(jwk))
        except Exception as exc:
            raise SkippedKey(f"invalid key material ({exc.__class__.__name__})") from None
        signature_bytes: int | None = None
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < MIN_RSA_BITS:
                raise SkippedKey(f"RSA key of {key.key_size} bits (minimum {MIN_RSA_BITS})")
            signature_bytes = (key.key_size + 7) // 8
        elif isinstance(key, ed25519.Ed25519PublicKey):
            signature_bytes = 64
        elif isinstance(key, ed448.Ed448PublicKey):
            signature_bytes = 114
        elif isinstance(key, bytes):
            if len(key) < _HMAC_MIN_BYTES[alg]:
                raise SkippedKey(f"HMAC secret of {len(key)} bytes (minimum {_HMAC_MIN_BYTES[alg]})")
        out.append(VerifyKey(kid, alg, key, algorithm, print_, signature_bytes))
    return out


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable keys of one issuer, indexed by kid."""

    keys: tuple[VerifyKey, ...] = ()
    skipped: tuple[str, ...] = ()
    _by_kid: dict[str, tuple[VerifyKey, ...]] = field(default_factory=dict, repr=False)
    _no_kid: tuple[VerifyKey, ...] = ()

    @classmethod
    def build(cls, keys: list[VerifyKey], skipped: list[str]) -> KeySet:
        by_kid: dict[str, list[VerifyKey]] = {}
        for key in keys:
            if key.kid is not None:
                by_kid.setdefault(key.kid, []).append(key)
        return cls(
            tuple(keys), tuple(skipped),
            {kid: tuple(group) for kid, group in by_kid.items()},
            tuple(k for k in keys if k.kid is None),
        )

    @property
    def thumbprints(self) -> frozenset[str]:
        return frozenset(k.thumbprint for k in self.keys)

    def has_kid(self, kid: str | None) -> bool:
        return kid is None or kid in self._by_kid or bool(self._no_kid)

    def candidates(self, kid: str | None, alg: str) -> list[VerifyKey]:
        """Keys to try for a token: those with its kid (or, with no kid in the
        token, all keys) plus keys without a kid, for exactly its alg."""
        pool = self.keys if kid is None else self._by_kid.get(kid, ()) + self._no_kid
        return [key for key in pool if key.alg == alg][:MAX_KEYS_TRIED]


def parse_jwks(document: Any, allowed: Iterable[str], *, allow_symmetric: bool) -> KeySet:
    """Parse a JWKS document key by key. Raises ValueError when the document
    itself is not a key set or holds no usable key."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    allowed = list(allowed)
    keys: list[VerifyKey] = []
    skipped: list[str] = []
    for index, jwk in enumerate(document["keys"]):
        try:
            keys.extend(parse_jwk(jwk, allowed, allow_symmetric=allow_symmetric))
        except SkippedKey as exc:
            kid = jwk.get("kid") if isinstance(jwk, dict) else None
            skipped.append(f"key {index} (kid {kid!r}): {exc}")
    if not keys:
        detail = "; ".join(skipped) if skipped else "the set is empty"
        raise ValueError(f"no usable key ({detail})")
    return KeySet.build(keys, skipped)
