"""The package's public names are exactly those in ``authz.__all__``, and they work together."""

from __future__ import annotations

import authz
from testkit.paths import ACCEPTANCE


def test_public_names() -> None:
    assert sorted(authz.__all__) == [
        "AuthzError", "ConfigError", "CredentialError", "Decision", "Engine", "Identity", "KeyRegistry",
        "Policy", "Problem", "Reason", "Request", "__version__", "load_policy",
    ]
    for name in authz.__all__:
        assert hasattr(authz, name), name


def test_the_core_without_a_server() -> None:
    engine = authz.Engine(authz.load_policy(str(ACCEPTANCE / "policy.yaml")))
    decision = engine.decide(authz.Request(method="GET", path="/healthz", headers={}, source_address="198.51.100.7"))
    assert ((decision.allowed, decision.status, decision.reason, decision.rule)
            == (True, 200, authz.Reason.ALLOWED, "public-health"))
    assert issubclass(authz.ConfigError, authz.AuthzError)
