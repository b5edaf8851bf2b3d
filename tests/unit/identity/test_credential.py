"""The credential plug point: a source that is neither a JWT nor an API key,
registered as one more credential section, is asked by the engine in order,
keyed by the decision cache through its header, and decided like any other,
with no edit to the engine, the doors or the caches (docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.config import compile as compile_module
from authz.config import load_policy, schema
from authz.engine import Engine
from authz.errors import InvalidToken, Reason
from authz.identity.base import Identity, TokenCache
from authz.identity.credential import Credential
from authz.request import Request
from testkit.requests import request

POLICY = """\
version: 1
roles:
  reader:
    - paths: ["/api/*"]
"""


class SessionCookie:
    """A made-up credential: ``x-session: good`` is the reader ``sam``."""

    name = "session (header x-session)"
    kind = "session"
    header_name = "x-session"

    def authenticate(self, request: Request, *, now: float, cache: TokenCache | None) -> Identity | None:
        value = request.headers.get("x-session")
        if value is None:
            return None
        if value != "good":
            raise InvalidToken("unknown session")
        return Identity(kind="session", subject="sam", source="session", roles=frozenset({"reader"}))


def _section(compiler: object, model: schema.PolicySpec, before: list[Credential]) -> list[Credential]:
    return [SessionCookie()]


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setattr(compile_module, "CREDENTIAL_SECTIONS", (*compile_module.CREDENTIAL_SECTIONS, _section))
    (tmp_path / "policy.yaml").write_text(POLICY)
    policy = load_policy(str(tmp_path / "policy.yaml"))
    assert policy.credential_headers == ("x-session",)  # the decision cache keys on it
    return Engine(policy)


def test_a_registered_credential_is_decided_like_any_other(engine: Engine) -> None:
    allowed = engine.decide(request(headers={"x-session": "good"}))
    assert allowed.allowed and allowed.identity.kind == "session" and allowed.identity.subject == "sam"
    assert engine.decide(request(headers={"x-session": "bad"})).reason is Reason.INVALID_TOKEN
    assert engine.decide(request()).reason is Reason.MISSING_CREDENTIAL
