"""``authz token``: mint a development token for an issuer of a policy.

Only for issuers whose private key you hold (the bundled example's dev
issuer, a test IdP). The token carries exactly the claims the policy's issuer
checks: iss, aud, sub, iat, exp, roles in ``roles_claim``, scopes in
``scopes_claim``, and a ``kid`` that names the public key in its key set.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from authz.config import load_policy
from authz.errors import AuthzError, ConfigError
from authz.identity.keys import KeySet, thumbprint


class DevTokenError(AuthzError):
    pass


def _set_path(claims: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = claims
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _kid_for(key: Any, keyset: KeySet, alg: str) -> str | None:
    """The kid of the key-set entry that holds this key's public half."""
    public = key.public_key()
    algorithm = ECAlgorithm if isinstance(public, ec.EllipticCurvePublicKey) else RSAAlgorithm
    want = thumbprint(algorithm.to_jwk(public, as_dict=True))
    for candidate in keyset.keys:
        if candidate.thumbprint == want and candidate.alg == alg:
            return candidate.kid
    raise DevTokenError("the key's public half is not in the issuer's key set")


def mint(
    config: str, *, issuer_name: str | None, key_file: str, subject: str, roles: list[str], scopes: list[str],
    claims: list[str], ttl: int, audience: str | None,
) -> str:
    try:
        policy = load_policy(config)
    except ConfigError as exc:
        raise DevTokenError(f"invalid policy:\n{exc}") from None
    issuers = [i for i in policy.issuers if issuer_name is None or i.name == issuer_name]
    if not issuers:
        raise DevTokenError(f"no issuer named {issuer_name!r} in {config}")
    issuer = issuers[0]
    try:
        with open(key_file, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise DevTokenError(f"cannot load private key {key_file}: {exc}") from None
    signer: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if isinstance(key, rsa.RSAPrivateKey):
        signer = key
        alg = next((a for a in sorted(issuer.algorithms) if a.startswith("RS")), None)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        signer = key
        alg = "ES256" if "ES256" in issuer.algorithms else None
    else:
        alg = None
    if alg is None:
        raise DevTokenError(f"issuer {issuer.name!r} allows {sorted(issuer.algorithms)}, which this key cannot sign")
    current = issuer.keys.current() if hasattr(issuer.keys, "current") else None
    kid = _kid_for(key, current, alg) if current is not None else None
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": issuer.issuer,
        "aud": audience or sorted(issuer.audiences)[0],
        "sub": subject,
        "iat": now,
        "exp": now + ttl,
    }
    if roles:
        _set_path(body, issuer.roles_claim, roles)
    if scopes:
        _set_path(body, issuer.scopes_claim, " ".join(scopes))
    for item in claims:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise DevTokenError(f"--claim wants NAME=VALUE, not {item!r}")
        try:
            body[name] = json.loads(raw)
        except ValueError:
            body[name] = raw
    headers = {"typ": "JWT"}
    if kid is not None:
        headers["kid"] = kid
    return jwt.encode(body, signer, algorithm=alg, headers=headers)
