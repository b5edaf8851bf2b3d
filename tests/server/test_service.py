"""The Check servicer and its decision cache against key changes
(docs/security.md 52), through both doors, with a real remote key set served
by a FakeIdP and the interleaving forced by :class:`testkit.keys.PausingKeys`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format

from authz.config import KeyRegistry, load_policy
from authz.engine import SystemClock
from authz.identity.jwks import FetchLoop, RemoteKeys
from authz.server.service import CheckService, PolicyState
from authz.server.telemetry import Telemetry
from authz.wire.grpc import GRPC, CheckRequest, CheckResponse
from authz.wire.http import HttpDoor, HttpDoorSettings
from testkit.idp import FakeIdP, remote_issuer_policy
from testkit.keys import pausing
from testkit.requests import check_request_json
from testkit.tokens import claims, jwks, public_jwk, rsa_key, token

OLD = rsa_key("service-race-old")
KEPT = rsa_key("service-race-kept")
DOOR = HttpDoor(HttpDoorSettings("/authz", forwarded_hops=0, trust_xfcc=False))

Ask = Callable[[str], tuple[int, str]]


@pytest.fixture
def fetch_loop() -> Iterator[FetchLoop]:
    loop = FetchLoop()
    yield loop
    loop.close()


def _policy_file(tmp: Path, idp: FakeIdP) -> Path:
    path = tmp / "policy.yaml"
    path.write_text(remote_issuer_policy(idp))
    return path


def _ask(service: CheckService, door: str) -> Ask:
    def grpc(bearer: str) -> tuple[int, str]:
        message = json_format.ParseDict(check_request_json("GET", "/api/orders", headers={
            "authorization": f"Bearer {bearer}"}), CheckRequest())
        response = CheckResponse.FromString(service.check_sync(message.SerializeToString(), None))
        if response.HasField("ok_response"):
            return 200, "allowed"
        return response.denied_response.status.code, json.loads(response.denied_response.body)["reason"]

    def http(bearer: str) -> tuple[int, str]:
        scope = {"type": "http", "method": "GET", "raw_path": b"/authz/api/orders", "query_string": b"",
                 "headers": [(b"host", b"api.example.com"), (b"authorization", f"Bearer {bearer}".encode())]}
        status, _headers, body = asyncio.run(service.check_async(DOOR, scope, 5.0))
        return status, "allowed" if status == 200 else json.loads(body)["reason"]

    return grpc if door == "grpc" else http


@pytest.mark.parametrize("door", ["grpc", "http"])
def test_sec_52_a_decision_made_while_its_key_leaves_the_set_is_not_cached(
        tmp_path: Path, fetch_loop: FetchLoop, door: str) -> None:
    with FakeIdP() as idp, concurrent.futures.ThreadPoolExecutor(1) as pool:
        idp.jwks = jwks(public_jwk(OLD, kid="old"), public_jwk(KEPT, kid="kept"))
        states: list[PolicyState] = []
        # What the worker's listener does: invalidate the state in force.
        registry = KeyRegistry(fetch_loop, on_change=lambda _name, _removed: states[-1].invalidate())
        policy, paused = pausing(load_policy(str(_policy_file(tmp_path, idp)), registry=registry))
        keys = paused["remote"]
        remote = keys.inner
        assert isinstance(remote, RemoteKeys)
        assert remote.fetch_now().result(timeout=10)
        states.append(PolicyState(policy, SystemClock(), doors=(GRPC, DOOR)))
        ask = _ask(CheckService(states[-1], Telemetry()), door)

        # The control: with no key change, the second ask is a cached decision.
        control = token(claims(iss=idp.issuer, sub="control"), key=OLD, kid="old")
        assert ask(control) == (200, "allowed")
        hits, lookups = states[-1].decisions.stats.hits, keys.lookups
        assert ask(control) == (200, "allowed")
        assert states[-1].decisions.stats.hits == hits + 1 and keys.lookups == lookups

        # The race: the check has read the set holding "old"; "old" leaves the
        # set, and the listener runs, before the check stores anything.
        raced = token(claims(iss=idp.issuer, sub="raced"), key=OLD, kid="old")
        keys.arm()
        in_flight = pool.submit(ask, raced)
        assert keys.reached.wait(10)
        idp.jwks = jwks(public_jwk(KEPT, kid="kept"))
        assert remote.fetch_now().result(timeout=10)
        keys.release.set()
        assert in_flight.result(timeout=10) == (200, "allowed")  # decided with the set it had read

        # Neither the decision nor the verified token was kept: both tokens of
        # the removed key are refused from now on, and the kept key still works.
        assert ask(raced) == (401, "invalid_token")
        assert ask(control) == (401, "invalid_token")
        assert ask(token(claims(iss=idp.issuer), key=KEPT, kid="kept")) == (200, "allowed")


def test_sec_52_a_replaced_policy_state_keeps_nothing_for_the_checks_still_on_it(
        tmp_path: Path, fetch_loop: FetchLoop) -> None:
    with FakeIdP() as idp:
        idp.jwks = jwks(public_jwk(OLD, kid="old"))
        policy = load_policy(str(_policy_file(tmp_path, idp)), registry=KeyRegistry(fetch_loop))
        remote = policy.issuers[0].keys
        assert isinstance(remote, RemoteKeys)
        assert remote.fetch_now().result(timeout=10)
        state = PolicyState(policy, SystemClock(), doors=(GRPC, DOOR))
        service = CheckService(state, Telemetry())
        ask = _ask(service, "grpc")
        bearer = token(claims(iss=idp.issuer), key=OLD, kid="old")
        assert ask(bearer) == (200, "allowed")
        assert ask(bearer) == (200, "allowed") and state.decisions.stats.hits == 1
        state.retire()  # a reload replaced it; key changes now reach only its successor
        assert ask(bearer) == (200, "allowed")
        assert ask(bearer) == (200, "allowed")
        assert state.decisions.stats.hits == 1 and len(state.decisions) == 0 and len(state.tokens) == 0


NEW = rsa_key("service-rotation-new")


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never: {what}")


@pytest.mark.parametrize("overflow_wait", [30.0, 0.0])
def test_checks_beyond_the_waiters_quota_wait_for_a_young_fetch(
        tmp_path: Path, fetch_loop: FetchLoop, overflow_wait: float) -> None:
    """A rotation: tokens signed with a key the issuer has just published
    arrive together. One pool thread may wait for the refetch for the call's
    whole budget (max_waiting=1); the next waits too while the fetch is
    young (``overflow_wait``), instead of being denied at once. With no
    young-fetch wait (the control) it is denied at once."""
    with FakeIdP() as idp, concurrent.futures.ThreadPoolExecutor(2) as pool:
        idp.jwks = jwks(public_jwk(OLD, kid="old"))
        policy = load_policy(str(_policy_file(tmp_path, idp)), registry=KeyRegistry(fetch_loop))
        remote = policy.issuers[0].keys
        assert isinstance(remote, RemoteKeys)
        assert remote.fetch_now().result(timeout=10)
        service = CheckService(PolicyState(policy, SystemClock(), doors=(GRPC, DOOR)), Telemetry(),
                               max_waiting=1, overflow_wait=overflow_wait)
        ask = _ask(service, "grpc")
        idp.jwks = jwks(public_jwk(OLD, kid="old"), public_jwk(NEW, kid="new"))
        idp.mode = "gate"  # the refetch is held until the test opens the gate
        try:
            first = pool.submit(ask, token(claims(iss=idp.issuer, sub="first"), key=NEW, kid="new"))
            _until(lambda: service.waiting == 1, "the first check waits for the refetch")
            second = pool.submit(ask, token(claims(iss=idp.issuer, sub="second"), key=NEW, kid="new"))
            if overflow_wait:
                _until(lambda: service.waiting == 2, "the second check waits too")
            else:
                assert second.result(timeout=10) == (401, "invalid_token")  # denied while the fetch is held
        finally:
            idp.gate.set()
        assert first.result(timeout=10) == (200, "allowed")
        if overflow_wait:
            assert second.result(timeout=10) == (200, "allowed")
