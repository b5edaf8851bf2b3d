"""What authz writes stays well-formed (docs/security.md 65): a claim cannot
add a list item or a cookie attribute, and the request Envoy forwards
upstream (the client's headers with authz's) stays within Envoy's limits:
denied ``request_headers_too_large`` otherwise, and never served from the
decision cache."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from authz.config import load_policy
from authz.config.advice import header_size_warnings
from authz.engine import Engine
from authz.errors import Reason
from authz.response_plan import (
    MAX_REQUEST_BYTES,
    MAX_REQUEST_HEADERS,
    ROOMY_BYTES,
    ROOMY_HEADERS,
    upstream_request_size,
)
from authz.sanitize import mark_separators, sanitize_marked_value
from authz.server.service import CheckService, PolicyState
from authz.server.telemetry import Telemetry
from authz.wire.grpc import GRPC, CheckRequest
from authz.wire.http import HttpDoor, HttpDoorSettings
from testkit.paths import ACCEPTANCE
from testkit.requests import check_request_json, request
from testkit.tokens import token

NOW = 1_800_000_000.0
RESPONSE = """\
  headers:
    x-user-id: identity.subject
    x-user-roles: identity.roles.join(",")
    x-user-name: '"name=" + identity.claims.name + "; lang=en"'
  client_headers:
    set-cookie: '"tier=" + identity.claims.tier + "; Path=/; Secure"'
"""


class FixedClock:
    def time(self) -> float:
        return NOW

    def monotonic(self) -> float:
        return 1000.0


def _engine(tmp_path: Path, response: str = RESPONSE) -> Engine:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in ("policy.yaml", "corp.jwks.json", "identity-es256.pem"):
        shutil.copy(ACCEPTANCE / name, tmp_path / name)
    policy = tmp_path / "policy.yaml"
    text = policy.read_text().replace("  headers:\n    x-user-id: identity.subject\n", response, 1)
    policy.write_text(text)
    return Engine(load_policy(str(policy)), clock=FixedClock())


def _bearer(**claims: Any) -> str:
    return token({"iss": "https://idp.example.com", "aud": "orders-api", "sub": "alice", "iat": int(NOW) - 10,
                  "exp": int(NOW) + 600, "tenant": "t1", "groups": ["orders-reader"], "name": "Alice",
                  "tier": "gold", **claims})


def test_separators_a_claim_brings_are_encoded_and_the_policys_own_kept(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    decision = engine.decide(request("GET", "/api/orders", bearer=_bearer(
        groups=["orders-reader", "viewer,orders-admin"], name="Doe, John; admin=1",
        tier="gold; Domain=evil.example, other=1"), headers={"x-tenant": "t1"}))
    assert decision.allowed, decision
    headers = dict(decision.headers)
    assert headers["x-user-roles"] == "orders-reader,viewer%2Corders-admin"  # one role, not two
    assert headers["x-user-name"] == "name=Doe%2C John%3B admin=1; lang=en"
    assert dict(decision.client_headers)["set-cookie"] == "tier=gold%3B Domain=evil.example%2C other=1; Path=/; Secure"
    # The control: plain values pass as they are.
    decision = engine.decide(request("GET", "/api/orders", bearer=_bearer(groups=["orders-reader", "viewer"]),
                                     headers={"x-tenant": "t1"}))
    assert dict(decision.headers)["x-user-roles"] == "orders-reader,viewer"
    assert dict(decision.client_headers)["set-cookie"] == "tier=gold; Path=/; Secure"


def test_marking_reaches_every_string_and_key_and_decodes_to_the_original() -> None:
    read = {"a;b": ["x,y", ("p;q",), 3], "n": None, "t": True}
    marked = mark_separators(read)
    assert ";" not in repr(marked) and "," not in repr(marked).replace(", ", "")
    assert sanitize_marked_value(mark_separators("Zoë;,%")) == "Zo%C3%AB%3B%2C%25"
    assert sanitize_marked_value("a,b;c") == "a,b;c"  # the policy's own


def _headers(count: int, size: int = 10) -> dict[str, str]:
    return {f"x-h{i:03d}": "v" * size for i in range(count)}


def test_the_client_headers_and_the_policys_together_stay_within_envoys_limits(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    bearer = _bearer()
    fits = engine.decide(request("GET", "/api/orders", bearer=bearer, headers={"x-tenant": "t1", **_headers(80)}))
    assert fits.allowed, fits
    count, _size = upstream_request_size(request(headers={"x-tenant": "t1", **_headers(80)}, bearer=bearer).headers,
                                         fits.headers)
    assert count <= MAX_REQUEST_HEADERS
    # 93 of the client's (with the pseudo-headers, the request id and the
    # credential) and authz's 4 pass 100 headers.
    many = engine.decide(request("GET", "/api/orders", bearer=bearer, headers={"x-tenant": "t1", **_headers(93)}))
    assert not many.allowed and many.reason is Reason.REQUEST_HEADERS_TOO_LARGE and not many.cacheable
    assert many.status == 403
    big = {"x-tenant": "t1", "x-big": "b" * (MAX_REQUEST_BYTES - 1000)}
    large = engine.decide(request("GET", "/api/orders", bearer=bearer, headers=big))
    assert large.reason is Reason.REQUEST_HEADERS_TOO_LARGE, large
    # A forged copy is replaced, not added to; what authz removes makes no
    # room (Envoy sets an answer's headers before it removes any).
    assert upstream_request_size({"authorization": "x" * 100, "x-user-id": "forged", "a": "b"},
                                 [("x-user-id", "alice"), ("x-new", "v")]) == (
        4, len("authorization") + 100 + len("x-user-id") + 5 + 2 + len("x-new") + 1)


def test_an_answer_that_takes_more_than_half_the_limits_is_not_cached(tmp_path: Path) -> None:
    wide = "  headers:\n" + "".join(f"    x-w{i}: '\"{'w' * 6000}\"'\n" for i in range(6))
    engine = _engine(tmp_path, wide)
    decision = engine.decide(request("GET", "/api/orders", bearer=_bearer(), headers={"x-tenant": "t1"}))
    assert decision.allowed and not decision.cacheable  # 36 KB added: past half of 60 KiB
    narrow = _engine(tmp_path / "narrow")
    decision = narrow.decide(request("GET", "/api/orders", bearer=_bearer(), headers={"x-tenant": "t1"}))
    assert decision.allowed and decision.cacheable


def test_requests_without_room_for_a_cached_answer_are_never_looked_up(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    reads, credentials = engine.policy.reads, engine.policy.credential_headers
    key = GRPC.make_cache_key(reads, credentials)

    def check(extra: dict[str, str]) -> tuple[bytes, Any]:
        message = json_format.ParseDict(check_request_json("GET", "/api/orders", headers={
            "authorization": f"Bearer {_bearer()}", "x-tenant": "t1", **extra}), CheckRequest())
        return message.SerializeToString(), message

    raw, message = check(_headers(10))
    assert len(raw) <= ROOMY_BYTES and key(message) is not None
    raw, message = check(_headers(ROOMY_HEADERS))
    assert key(message) is None
    # The servicer does not look a serialized request this long up.
    raw, message = check({"x-big": "b" * ROOMY_BYTES})
    assert len(raw) > ROOMY_BYTES
    service = CheckService(PolicyState(engine.policy, FixedClock()), Telemetry())
    for _ in range(2):
        service.check_sync(raw, None)
    assert service.state.decisions.stats.hits == 0 and len(service.state.decisions) == 0
    raw, _message = check({"x-small": "s"})
    for _ in range(2):
        service.check_sync(raw, None)
    assert service.state.decisions.stats.hits == 1  # the control

    door = HttpDoor(HttpDoorSettings("/authz", 0, False))
    http_key = door.make_cache_key(reads, credentials)

    def call(extra: dict[str, str]) -> Any:
        headers = {"authorization": f"Bearer {_bearer()}", "x-tenant": "t1", **extra}
        return door.parse({"raw_path": b"/authz/api/orders", "query_string": b"", "method": "GET",
                           "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})

    assert http_key(call(_headers(10))) is not None
    assert http_key(call(_headers(ROOMY_HEADERS))) is None
    assert http_key(call({"x-big": "b" * ROOMY_BYTES})) is None


def test_validate_warns_when_the_policys_headers_could_pass_the_limits(tmp_path: Path) -> None:
    assert header_size_warnings(_engine(tmp_path).policy) == []
    seven = "  headers:\n" + "".join(f"    x-h{i}: identity.subject\n" for i in range(6))
    assert header_size_warnings(_engine(tmp_path / "seven", seven).policy) == []  # with the token: 7 x 8 KiB
    eight = "  headers:\n" + "".join(f"    x-h{i}: identity.subject\n" for i in range(7))
    found = header_size_warnings(_engine(tmp_path / "eight", eight).policy)
    assert len(found) == 1
    line, _, message = found[0].partition(": ")
    policy_lines = (tmp_path / "eight" / "policy.yaml").read_text().splitlines()
    assert policy_lines[int(line) - 1].strip().startswith("identity_token:"), found
    assert message.startswith("warning: response.headers: the 8 upstream header(s)") and \
        "request_headers_too_large" in message


@pytest.mark.parametrize("text", [textwrap.dedent("""\
    version: 1
    rules:
      - {name: open, effect: allow, paths: ["/**"], anonymous: true}
    """)])
def test_a_policy_without_headers_needs_no_warning(tmp_path: Path, text: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    assert header_size_warnings(load_policy(str(policy))) == []
