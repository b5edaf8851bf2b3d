"""Both doors decide alike: the same client request, sent as a gRPC
CheckRequest and as Envoy's HTTP ext_authz call, gets the same decision,
status, reason, challenge, upstream headers, client headers and dynamic
metadata (docs/architecture.md)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.config import load_policy
from authz.engine import SystemClock
from authz.metadata import BUILTIN, as_text
from authz.server.service import CheckService, PolicyState
from authz.server.telemetry import Telemetry
from authz.wire.grpc import GRPC, CheckRequest, CheckResponse
from authz.wire.http import HttpDoor, HttpDoorSettings
from testkit.paths import ACCEPTANCE
from testkit.requests import check_request_json
from testkit.tokens import claims, token

PREFIX = "/authz"
BILLING = "spiffe://cluster.local/ns/shop/sa/billing"
#: Minted at import and read by tests that may run long after it on a busy
#: machine: valid for a day, so no test meets one inside its leeway.
DAY = int(time.time()) + 86_400
TOKENS = {
    "alice-t1": token(claims(sub="alice", tenant="t1", exp=DAY)),
    "bob-t2": token(claims(sub="bob", tenant="t2", exp=DAY)),
    "expired": token(claims(exp=1_000_000)),
    "garbage": "not.a.token",
}
SEGMENTS = ["api", "orders", "123", "admin", "healthz", "..", ".", "%2F", "%2e%2e", "%41", "", "x;y", "~"]


@st.composite
def client_requests(draw: st.DrawFn) -> dict[str, Any]:
    segments = draw(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=5))
    headers: dict[str, str] = {}
    credential = draw(st.sampled_from([None, *TOKENS]))
    if credential is not None:
        headers["authorization"] = f"Bearer {TOKENS[credential]}"
    if draw(st.booleans()):
        headers["x-tenant"] = draw(st.sampled_from(["t1", "t2", ""]))
    if draw(st.booleans()):
        headers["x-api-key"] = draw(st.sampled_from(["ak_live_3f9c2b7e4d1a", "wrong"]))
    return {
        "method": draw(st.sampled_from(["GET", "HEAD", "POST", "DELETE"])),
        "path": "/" + "/".join(segments),
        "query": draw(st.sampled_from(["", "a=1", "tenant=t2&x=%2F"])),
        "headers": headers,
        "source": draw(st.sampled_from(["198.51.100.7", "203.0.113.5"])),
        "principal": draw(st.sampled_from(["", BILLING, "spiffe://cluster.local/ns/shop/sa/stranger"])),
    }


DOOR = HttpDoor(HttpDoorSettings(PREFIX, forwarded_hops=1, trust_xfcc=True))
# What the acceptance policy adds for the client and for Envoy here.
EXTRA_RESPONSE = """\
  metadata:
    sub: identity.subject
    roles: identity.roles
    tenant: identity.claims.tenant
  client_headers:
    set-cookie: ['"seen=" + identity.subject', '"kind=" + identity.kind']
"""
METADATA_KEYS = {*BUILTIN, "sub", "roles", "tenant"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> CheckService:
    tmp = tmp_path_factory.mktemp("doors")
    for name in ("policy.yaml", "corp.jwks.json", "identity-es256.pem"):
        shutil.copy(ACCEPTANCE / name, tmp / name)
    policy = tmp / "policy.yaml"
    policy.write_text(policy.read_text().replace("  remove: [authorization]\n", "  remove: [authorization]\n"
                                                 + EXTRA_RESPONSE))
    state = PolicyState(load_policy(str(policy)), SystemClock(), doors=(GRPC, DOOR))
    return CheckService(state, Telemetry())


def _grpc(service: CheckService, call: dict[str, Any]) -> tuple[Any, ...]:
    target = call["path"] + (f"?{call['query']}" if call["query"] else "")
    message = json_format.ParseDict(check_request_json(call["method"], target, headers=call["headers"],
                                                       source=call["source"], principal=call["principal"]),
                                    CheckRequest())
    response = CheckResponse.FromString(service.check_sync(message.SerializeToString(), None))
    # The HTTP door carries each value as a header: a string as it is, others as JSON.
    metadata = {key: as_text(value) for key, value in json_format.MessageToDict(response.dynamic_metadata).items()}
    if response.HasField("ok_response"):
        ok = response.ok_response
        headers = {h.header.key: h.header.value for h in ok.headers}
        client = [(h.header.key, h.header.value) for h in ok.response_headers_to_add]
        return _outcome(200, "allowed", headers, list(ok.headers_to_remove), client, metadata)
    denied = response.denied_response
    headers = {h.header.key: h.header.value for h in denied.headers}
    return _outcome(denied.status.code, json.loads(denied.body)["reason"], headers, [], [], metadata)


def _http(service: CheckService, call: dict[str, Any]) -> tuple[Any, ...]:
    headers = [(b"host", b"api.example.com"), (b"x-forwarded-proto", b"https"), (b"x-request-id", b"req-1"),
               (b"x-forwarded-for", b"203.0.113.1, " + call["source"].encode())]
    if call["principal"]:
        headers.append((b"x-forwarded-client-cert", f'By=spiffe://x;URI={call["principal"]}'.encode()))
    headers += [(k.encode(), v.encode()) for k, v in call["headers"].items()]
    scope = {"type": "http", "method": call["method"], "raw_path": (PREFIX + call["path"]).encode(),
             "query_string": call["query"].encode(), "headers": headers}
    status, answer, body = asyncio.run(service.check_async(DOOR, scope, 1.0))
    pairs = [(k.decode(), v.decode()) for k, v in answer]
    # Envoy sorts the answer's headers by name, as its configuration lists them.
    client = [(k, v) for k, v in pairs if k == "set-cookie"]
    metadata = {k: v for k, v in pairs if k in METADATA_KEYS}
    found = {k: v for k, v in pairs if k != "set-cookie" and k not in METADATA_KEYS}
    removed = found.pop("x-envoy-auth-headers-to-remove", "")
    if status == 200:
        return _outcome(200, "allowed", found, removed.split(",") if removed else [], client, metadata)
    return _outcome(status, json.loads(body)["reason"], found, [], client, metadata)


def _outcome(status: int, reason: str, headers: dict[str, str], removed: list[str],
             client: list[tuple[str, str]], metadata: dict[str, str]) -> tuple[Any, ...]:
    token_present = "x-identity-token" in headers
    headers = {k: v for k, v in headers.items() if k != "x-identity-token"}
    return status, reason, sorted(headers.items()), sorted(removed), token_present, client, sorted(metadata.items())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=client_requests())
def test_the_same_request_gets_the_same_answer_through_either_door(service: CheckService, call: dict[str, Any]) -> None:
    # Each request twice: the second answer comes from the decision cache,
    # which both doors share (keys never collide between doors).
    for _ in range(2):
        assert _grpc(service, call) == _http(service, call), call


def test_an_attribute_the_http_door_cannot_know_fails_closed(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        "rules:\n"
        "  - {name: open, effect: allow, paths: ['/open', '/admin/**'], anonymous: true}\n"
        "  - {name: not-from-the-mesh, effect: deny, paths: ['/admin/**'], when: 'destination.principal == \"\"'}\n"
        "  - {name: by-context, effect: allow, paths: ['/ctx'], methods: [POST], anonymous: true, when: 'context.k == "
        "\"v\"'}\n"
    )
    state = PolicyState(load_policy(str(policy)), SystemClock(), doors=(GRPC, DOOR))
    service = CheckService(state, Telemetry())
    call = {"method": "GET", "path": "/admin/x", "query": "", "headers": {}, "source": "10.0.0.1", "principal": ""}
    # Through gRPC the destination is known (not from the mesh: ""), and the
    # deny rule decides; through HTTP it cannot be known, and the rule matches
    # all the same (fail closed) instead of being skipped.
    assert _http(service, call)[:2] == (403, "denied_by_rule")
    assert _http(service, {**call, "path": "/open"})[:2] == (200, "allowed")
    # An allow rule that reads what the door cannot know does not allow.
    assert _http(service, {**call, "path": "/ctx", "method": "POST"})[:2] == (401, "missing_credential")


def test_both_doors_send_the_same_metadata_and_client_headers(service: CheckService) -> None:
    headers = {"authorization": f"Bearer {TOKENS['alice-t1']}", "x-tenant": "t1"}
    call: dict[str, Any] = {"method": "GET", "path": "/api/orders/1", "query": "", "source": "198.51.100.7",
                            "principal": "", "headers": headers}
    grpc, http = _grpc(service, call), _http(service, call)
    assert grpc == http
    assert grpc[5] == [("set-cookie", "seen=alice"), ("set-cookie", "kind=jwt")]
    assert dict(grpc[6]) == {"reason": "allowed", "rule": "orders-reader", "issuer": "corp", "sub": "alice",
                             "roles": '["orders-reader"]', "tenant": "t1"}
    # A denial: reason, rule and issuer only, through either door.
    denied = {**call, "headers": {**headers, "x-tenant": "t2"}}
    grpc, http = _grpc(service, denied), _http(service, denied)
    assert grpc == http
    assert dict(grpc[6]) == {"reason": "denied_by_rule", "rule": "tenant-isolation", "issuer": "corp"}
