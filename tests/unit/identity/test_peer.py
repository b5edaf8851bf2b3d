"""Peer globs over ``source.principal``: the same linear matcher as paths."""

from __future__ import annotations

from authz.identity.peer import PeerRoles
from authz.matchers import Globs


def test_peer_globs_grant_the_roles_of_every_pattern_that_matches() -> None:
    peers = PeerRoles.compile({
        "spiffe://cluster.local/ns/shop/sa/*": frozenset({"shop"}),
        "spiffe://cluster.local/ns/**": frozenset({"mesh"}),
        "spiffe://cluster.local/ns/shop/sa/orders": frozenset({"orders"}),
    })
    assert peers.roles_for("spiffe://cluster.local/ns/shop/sa/orders") == frozenset({"shop", "mesh", "orders"})
    assert peers.roles_for("spiffe://cluster.local/ns/shop/sa/cart") == frozenset({"shop", "mesh"})
    assert peers.roles_for("spiffe://cluster.local/ns/shop/sa/cart/x") == frozenset({"mesh"})
    assert peers.roles_for("spiffe://other.domain/ns/shop/sa/cart") is None
    assert peers.roles_for("") is None


def test_peer_globs_run_on_the_linear_matcher() -> None:
    # A principal can come from x-forwarded-client-cert on the HTTP door, so
    # a hostile one must not meet a backtracking regex.
    peers = PeerRoles.compile({"spiffe://*a*a*a*a*b": frozenset({"x"})})
    assert all(isinstance(globs, Globs) and globs.automaton is not None for _, globs, _ in peers.patterns)
    assert peers.roles_for("spiffe://" + "a" * 5000) is None
    assert peers.roles_for("spiffe://" + "a" * 5000 + "b") == frozenset({"x"})
