"""Minting tokens and keys for tests, including deliberately broken ones."""

from __future__ import annotations

import base64
import functools
import json
import time
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from testkit.paths import ACCEPTANCE

ACCEPTANCE_ISSUER = "https://idp.example.com"
ACCEPTANCE_KID = "corp-2026"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def encode_part(part: dict[str, Any] | bytes | str) -> str:
    if isinstance(part, dict):
        part = json.dumps(part, separators=(",", ":")).encode()
    elif isinstance(part, str):
        part = part.encode()
    return b64(part)


@functools.cache
def contract_key() -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key((ACCEPTANCE / "corp-signing-key.pem").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@functools.cache
def rsa_key(name: str = "a", bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def ec_key(name: str = "a", curve: str = "P-256") -> ec.EllipticCurvePrivateKey:
    curves = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
    return ec.generate_private_key(curves[curve])


_HASHES: dict[str, Any] = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
_EC_WIDTH = {"ES256": 32, "ES384": 48, "ES512": 66}


def raw_sign(signing_input: bytes, key: Any, alg: str) -> bytes:
    if alg == "EdDSA":
        return bytes(key.sign(signing_input))
    digest = _HASHES[alg[-3:]]
    if alg.startswith("RS"):
        return bytes(key.sign(signing_input, padding.PKCS1v15(), digest))
    if alg.startswith("PS"):
        return bytes(key.sign(signing_input, padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size),
                              digest))
    if alg.startswith("ES"):
        r, s = utils.decode_dss_signature(key.sign(signing_input, ec.ECDSA(digest)))
        width = _EC_WIDTH[alg]
        return r.to_bytes(width, "big") + s.to_bytes(width, "big")
    if alg.startswith("HS"):
        import hmac

        return hmac.new(key, signing_input, digest.name).digest()
    raise ValueError(alg)


def token(
    payload: dict[str, Any] | bytes | str,
    *,
    key: Any = None,
    alg: str = "RS256",
    header: dict[str, Any] | bytes | str | None = None,
    kid: str | None = ACCEPTANCE_KID,
) -> str:
    """A compact JWS; ``header``/``payload`` may be raw bytes to craft malformed JSON."""
    if header is None:
        header = {"alg": alg, "typ": "JWT"}
        if kid is not None:
            header["kid"] = kid
    signing_input = f"{encode_part(header)}.{encode_part(payload)}".encode()
    signature = raw_sign(signing_input, key if key is not None else contract_key(), alg)
    return signing_input.decode() + "." + b64(signature)


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for the contract's issuer, overridable (None deletes)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ACCEPTANCE_ISSUER,
        "aud": "orders-api",
        "sub": "alice",
        "iat": now - 10,
        "exp": now + 600,
        "groups": ["orders-reader"],
        "scope": "orders:read",
        "tenant": "t1",
    }
    for name, value in overrides.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def public_jwk(key: Any, *, kid: str | None, alg: str | None = None, **extra: Any) -> dict[str, Any]:
    public = key.public_key() if hasattr(key, "public_key") else key
    if isinstance(public, rsa.RSAPublicKey):
        jwk = json.loads(RSAAlgorithm.to_jwk(public))
    else:
        jwk = json.loads(ECAlgorithm.to_jwk(public))
    if kid is not None:
        jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    jwk.update(extra)
    return dict(jwk)


def jwks(*keys: Any) -> dict[str, Any]:
    return {"keys": list(keys)}
