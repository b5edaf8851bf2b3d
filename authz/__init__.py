"""authz: an Envoy external-authorization service (ext_authz v3, gRPC).

The decision core, usable without a server::

    from authz import Engine, Request, load_policy

    engine = Engine(load_policy("policy.yaml"))
    decision = engine.decide(Request(method="GET", path="/api/orders", headers={...}))
    decision.allowed, decision.status, decision.reason

Errors (see :mod:`authz.errors`): :class:`AuthzError` is the base;
:class:`ConfigError` lists every problem of a policy file as ``FILE:LINE:
message``; a denial is a :class:`Decision`, never an exception.
"""

from authz.config import KeyRegistry, load_policy
from authz.decision import Decision
from authz.engine import Engine
from authz.errors import AuthzError, ConfigError, CredentialError, Problem, Reason
from authz.identity.base import Identity
from authz.policy import Policy
from authz.request import Request

__version__ = "0.1.0"

__all__ = [
    "AuthzError",
    "ConfigError",
    "CredentialError",
    "Decision",
    "Engine",
    "Identity",
    "KeyRegistry",
    "Policy",
    "Problem",
    "Reason",
    "Request",
    "__version__",
    "load_policy",
]
