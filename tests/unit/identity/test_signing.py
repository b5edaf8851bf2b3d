"""The identity token authz signs for the upstream: its lifetime and its reuse."""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from authz.identity.base import Identity
from authz.identity.jws import b64url_decode
from authz.identity.signing import IdentityTokenSigner

NOW = 1_800_000_000.0


def signer() -> IdentityTokenSigner:
    return IdentityTokenSigner(header="x-identity-token", issuer="https://authz", audience="internal", ttl=60,
                               key=ec.generate_private_key(ec.SECP256R1()), kid="k", jwks=())


def claims(token: str) -> dict[str, Any]:
    return dict(json.loads(b64url_decode(token.split(".")[1])))


def caller(expires_at: float | None) -> Identity:
    return Identity(kind="jwt", subject="alice", issuer="https://idp", source="corp", roles=frozenset({"r"}),
                    expires_at=expires_at)


def test_the_token_never_outlives_the_credential_it_was_made_from() -> None:
    token, fresh_until = signer().token(caller(NOW + 20.5), "", NOW)
    assert (claims(token)["iat"], claims(token)["exp"]) == (NOW, NOW + 20)
    assert fresh_until == NOW + 10


def test_a_credential_without_expiry_gets_the_configured_lifetime() -> None:
    token, fresh_until = signer().token(caller(None), "", NOW)
    assert claims(token)["exp"] == NOW + 60 and fresh_until == NOW + 30


def test_a_token_is_reused_for_half_its_life_and_only_for_a_credential_that_lives_as_long() -> None:
    s = signer()
    first, _ = s.token(caller(NOW + 3600), "", NOW)
    assert s.token(caller(NOW + 3600), "", NOW + 29)[0] == first
    assert s.token(caller(NOW + 3600), "", NOW + 30)[0] != first  # past half its life
    s = signer()
    first, _ = s.token(caller(NOW + 3600), "", NOW)
    # The same caller with a credential that expires sooner: a new, shorter token.
    second, fresh_until = s.token(caller(NOW + 40), "", NOW + 5)
    assert second != first and claims(second)["exp"] == NOW + 40 and fresh_until == NOW + 5 + 35 / 2


def jwt_caller(exp: float, leeway: float = 30) -> Identity:
    """A JWT caller as the verifier reports it: accepted until exp + leeway."""
    return Identity(kind="jwt", subject="alice", issuer="https://idp", source="corp", roles=frozenset({"r"}),
                    expires_at=exp + leeway, credential_exp=exp)


def test_the_token_ends_at_the_credentials_own_exp_never_within_the_leeway() -> None:
    s = signer()
    assert s.limit(jwt_caller(NOW + 20)) == NOW + 20
    token, fresh_until = s.token(jwt_caller(NOW + 20), "", NOW)
    assert (claims(token)["iat"], claims(token)["exp"]) == (NOW, NOW + 20)
    assert fresh_until == NOW + 10
    # Reuse follows the credential's exp too: a token made for a longer-lived
    # credential is not handed to one that ends sooner.
    s = signer()
    first, _ = s.token(jwt_caller(NOW + 3600), "", NOW)
    second, _ = s.token(jwt_caller(NOW + 40), "", NOW + 5)
    assert second != first and claims(second)["exp"] == NOW + 40


def test_the_limit_is_the_sooner_of_the_credentials_exp_and_its_acceptance() -> None:
    assert IdentityTokenSigner.limit(caller(None)) is None
    assert IdentityTokenSigner.limit(caller(NOW + 5)) == NOW + 5
    both = Identity(kind="jwt", expires_at=NOW + 5, credential_exp=NOW + 9)
    assert IdentityTokenSigner.limit(both) == NOW + 5
