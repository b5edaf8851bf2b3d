"""Stand-ins for the credentials a policy only knows by their public half.

``authz test`` decides cases offline, so it cannot use an issuer's real keys
(it holds no private key, and a ``jwks_uri`` or discovery issuer would be
fetched). :func:`stand_in` returns a copy of the compiled policy in which
every issuer verifies against an in-memory key set holding one freshly
generated key, of an algorithm the issuer allows, that only this process
knows; and in which every API-key subject also has a freshly generated key.
The verification code is the server's own, untouched: only the key set an
issuer's tokens are checked against, and the list of API-key hashes, differ.
Introspection and data sources are answered in process
(:mod:`authz.testing.outside`), client certificates chain to a CA made
for the run (:mod:`authz.testing.certs`), and browser sessions are sealed
with a key made for the run (:mod:`authz.testing.sessions`): nothing is ever
fetched (docs/security.md 59).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from authz.identity.api_key import ApiKeyEntry, ApiKeySource
from authz.identity.certificate import CertificateSource
from authz.identity.credential import Credential
from authz.identity.jwt import JwtIssuer, JwtSource
from authz.identity.keys import KeySet, parse_jwks
from authz.login.flow import Login
from authz.policy import Policy
from authz.testing.certs import StandInCA, stand_in_certificates
from authz.testing.outside import OutsideStandIns, stand_in_outside
from authz.testing.sessions import stand_in_logins

#: The algorithm a stand-in key signs with: the first of these the issuer allows.
PREFERENCE = ("ES256", "ES384", "ES512", "EdDSA", "RS256", "PS256", "RS384", "PS384", "RS512", "PS512",
              "HS256", "HS384", "HS512")
_CURVES: dict[str, ec.EllipticCurve] = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}
_HMAC_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
KID = "authz-test-stand-in"


class StandInKeys:
    """An issuer's key provider for ``authz test``: one key made on first
    use, never fetched (the :class:`authz.identity.jwt.KeyProvider` shape)."""

    def __init__(self, issuer: str, algorithms: frozenset[str]) -> None:
        self.issuer = issuer
        self.alg = next((a for a in PREFERENCE if a in algorithms), "")
        self._signer: Any = None
        self._keyset: KeySet | None = None

    def _make(self) -> None:
        alg = self.alg
        public: dict[str, Any]
        if alg in _CURVES:
            self._signer = ec.generate_private_key(_CURVES[alg])
            public = ECAlgorithm.to_jwk(self._signer.public_key(), as_dict=True)
        elif alg == "EdDSA":
            self._signer = ed25519.Ed25519PrivateKey.generate()
            public = OKPAlgorithm.to_jwk(self._signer.public_key(), as_dict=True)
        elif alg.startswith(("RS", "PS")):
            self._signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            public = RSAAlgorithm.to_jwk(self._signer.public_key(), as_dict=True)
        else:
            self._signer = secrets.token_bytes(_HMAC_BYTES[alg])
            public = {"kty": "oct", "k": base64.urlsafe_b64encode(self._signer).rstrip(b"=").decode()}
        public.update(kid=KID, alg=alg, use="sig")
        self._keyset = parse_jwks({"keys": [public]}, [alg], allow_symmetric=alg.startswith("HS"))

    def current(self) -> KeySet:
        if self._keyset is None:
            self._make()
        assert self._keyset is not None
        return self._keyset

    def sign(self, claims: Mapping[str, Any], header: Mapping[str, Any]) -> str:
        self.current()
        return jwt.encode(dict(claims), self._signer, algorithm=self.alg, headers={**header, "kid": KID})

    def wait_for_keys(self) -> None:
        return None

    def refetch_unknown_kid(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"source": "stand-in", "state": "ok", "keys": 1}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class StandIns:
    """A policy whose credentials ``authz test`` can present."""

    policy: Policy
    #: issuer name -> the issuer, verifying against its stand-in key
    issuers: Mapping[str, JwtIssuer]
    #: API-key subject -> (header, a key that authenticates as that subject)
    api_keys: Mapping[str, tuple[str, str]]
    #: the introspection issuers and data sources, answered in process
    outside: OutsideStandIns
    #: the certificates section, trusting ``ca`` alone (None: no section, or one with pins)
    certificates: CertificateSource | None = None
    ca: StandInCA | None = None
    #: the policy has a certificates section (``certificates`` is None when it pins)
    has_certificates: bool = False
    #: issuer name -> its login, sealing sessions with a key made for the run
    logins: Mapping[str, Login] = dataclasses.field(default_factory=dict)

    def mint(self, issuer_name: str, claims: Mapping[str, Any], now: int) -> str:
        """A token of the issuer: ``iss``, ``aud``, ``iat`` and ``exp`` (an
        hour on) from the issuer and ``now`` unless ``claims`` gives them;
        a claim given as None is left out."""
        issuer = self.issuers[issuer_name]
        body: dict[str, Any] = {"iss": issuer.issuer, "aud": sorted(issuer.audiences)[0], "iat": now, "exp": now + 3600}
        body.update(claims)
        body = {name: value for name, value in body.items() if value is not None}
        typ = sorted(issuer.token_types)[0] if issuer.token_types else "JWT"
        assert isinstance(issuer.keys, StandInKeys)
        return issuer.keys.sign(body, {"typ": typ})


def stand_in(policy: Policy) -> StandIns:
    """``policy`` with a stand-in key for every issuer and a known key for
    every API-key subject (besides the real ones, which still work)."""
    issuers = {
        issuer.name: dataclasses.replace(issuer, keys=StandInKeys(issuer.issuer, issuer.algorithms))
        for issuer in policy.issuers
    }
    by_iss = {issuer.issuer: issuer for issuer in issuers.values()}
    api_keys: dict[str, tuple[str, str]] = {}
    sources: list[Credential] = []
    for source in policy.credential_sources:
        if isinstance(source, JwtSource):
            group = [by_iss[iss] for iss in source.issuers]
            sources.append(JwtSource(source.location, group, known_issuers=source.known_issuers))
            continue
        if not isinstance(source, ApiKeySource):  # a credential without stand-ins: as the policy has it
            sources.append(source)
            continue
        extra = []
        for entry in source.entries:
            if entry.subject not in api_keys:
                key = f"authz-test-{secrets.token_hex(16)}"
                api_keys[entry.subject] = (source.header, key)
                extra.append(ApiKeyEntry(entry.subject, hashlib.sha256(key.encode()).digest(), entry.roles))
        sources.append(ApiKeySource(source.header, (*source.entries, *extra)))
    sources, data, outside = stand_in_outside(tuple(sources), policy.data)
    has_certificates = any(isinstance(source, CertificateSource) for source in sources)
    sources, certificates, ca = stand_in_certificates(sources)
    sources, logins = stand_in_logins(sources, issuers)
    calls = [*(issuer.calls for issuer in outside.introspection.values()), *outside.data.values(),
             *(login.calls for login in logins.values()),
             *(calls for calls in policy.outside_calls if calls.kind not in ("introspection", "data", "login"))]
    replaced = dataclasses.replace(policy, issuers=tuple(issuers.values()), credential_sources=tuple(sources),
                                   data=data, outside_calls=tuple(calls), logins=tuple(logins.values()))
    return StandIns(replaced, issuers, api_keys, outside, certificates, ca, has_certificates, logins)
