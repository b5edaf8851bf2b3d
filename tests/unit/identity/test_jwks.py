"""The remote key-set cache with an injected clock: staleness, the refetch
cooldown, shared in-flight fetches, key-removal notifications, and the
key-change races of docs/security.md 52 (listeners across reloads; a token
verified while its key leaves the set)."""

from __future__ import annotations

import concurrent.futures
import gc
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from authz.errors import InvalidToken
from authz.identity.jwks import FetchLoop, JwksSettings, KeyListener, KeyRegistry, RemoteKeys
from authz.identity.jwt import JwtIssuer, JwtSource, TokenLocation
from authz.server.cache import VerifiedTokenCache
from testkit.idp import FakeIdP
from testkit.keys import PausingKeys
from testkit.requests import request
from testkit.tokens import claims, jwks, public_jwk, rsa_key, token

A = rsa_key("jwks-cache-a")
B = rsa_key("jwks-cache-b")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def loop() -> Iterator[FetchLoop]:
    fetch_loop = FetchLoop()
    yield fetch_loop
    fetch_loop.close()


def _keys(idp: FakeIdP, loop: FetchLoop, clock: Clock, *, max_stale: float = 86400.0,
          min_refetch_interval: float = 30.0, listeners: tuple[KeyListener, ...] = ()) -> RemoteKeys:
    settings = JwksSettings(fetch_timeout=2.0, max_stale=max_stale, min_refetch_interval=min_refetch_interval)
    return RemoteKeys("remote", idp.issuer, idp.url + "/jwks", frozenset({"RS256"}), settings, loop=loop,
                      monotonic=clock, listeners=listeners)


def test_last_good_keys_serve_until_max_stale_then_none(loop: FetchLoop) -> None:
    clock = Clock()
    with FakeIdP() as idp:
        idp.jwks = jwks(public_jwk(A, kid="a"))
        keys = _keys(idp, loop, clock, max_stale=3600)
        assert keys.fetch_now().result(timeout=10) is True
        assert keys.current() is not None
        idp.mode = "500"
        clock.now += 1800
        assert keys.fetch_now().result(timeout=10) is False
        assert keys.current() is not None and keys.status()["state"] == "stale"
        clock.now += 1801
        assert keys.current() is None and keys.status()["state"] == "expired"


def test_unknown_kid_refetch_has_a_cooldown(loop: FetchLoop) -> None:
    clock = Clock()
    with FakeIdP() as idp:
        idp.jwks = jwks(public_jwk(A, kid="a"))
        keys = _keys(idp, loop, clock, min_refetch_interval=30)
        first = keys.refetch_unknown_kid()
        assert first is not None and first.result(timeout=10) is True
        clock.now += 29
        assert keys.refetch_unknown_kid() is None
        clock.now += 2
        again = keys.refetch_unknown_kid()
        assert again is not None and again.result(timeout=10) is True
        assert idp.jwks_fetches == 2


def test_concurrent_callers_share_the_fetch_in_flight(loop: FetchLoop) -> None:
    clock = Clock()
    with FakeIdP() as idp:
        idp.jwks = jwks(public_jwk(A, kid="a"))
        idp.mode = "gate"
        keys = _keys(idp, loop, clock)
        first = keys.wait_for_keys()
        assert first is not None
        assert keys.wait_for_keys() is first
        assert keys.refetch_unknown_kid() is first
        idp.gate.set()
        assert first.result(timeout=10) is True
        assert idp.jwks_fetches == 1


def test_listeners_hear_about_keys_that_left(loop: FetchLoop) -> None:
    clock = Clock()
    heard: list[tuple[str, frozenset[str]]] = []
    with FakeIdP() as idp:
        idp.jwks = jwks(public_jwk(A, kid="a"), public_jwk(B, kid="b"))
        keys = _keys(idp, loop, clock, listeners=(lambda name, removed: heard.append((name, removed)),))
        assert keys.fetch_now().result(timeout=10)
        before = keys.current()
        assert before is not None
        idp.jwks = jwks(public_jwk(A, kid="a"), public_jwk(B, kid="b"))
        assert keys.fetch_now().result(timeout=10)
        assert heard == []  # same keys: nothing left
        idp.jwks = jwks(public_jwk(B, kid="b"))
        assert keys.fetch_now().result(timeout=10)
        assert len(heard) == 1
        name, removed = heard[0]
        assert name == "remote" and len(removed) == 1
        current = keys.current()
        assert current is not None and not current.has_kid("a")


def test_oversized_documents_are_cut_off(loop: FetchLoop) -> None:
    clock = Clock()
    with FakeIdP() as idp:
        idp.mode = "huge"
        keys = _keys(idp, loop, clock)
        assert keys.fetch_now().result(timeout=10) is False
        assert "larger than 1048576 bytes" in keys.status()["last_error"]


class _FetchFinishesFirst(FetchLoop):
    """A real fetch loop whose fetches finish before ``submit`` returns, as they
    do when the loop thread wins the race against a local, fast key server."""

    def submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        future = super().submit(coro)
        concurrent.futures.wait([future], timeout=10)
        return future


def _bounded(call: Callable[[], Any]) -> Any:
    """``call()`` on a daemon thread; fails (instead of hanging) if it deadlocks."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "deadlocked"
    return result[0]


def test_a_fetch_that_finishes_before_submit_returns_does_not_deadlock() -> None:
    clock = Clock()
    loop = _FetchFinishesFirst()
    try:
        with FakeIdP() as idp:
            idp.jwks = jwks(public_jwk(A, kid="a"))
            keys = _keys(idp, loop, clock)
            assert _bounded(keys.fetch_now).result(timeout=10) is True
            assert _bounded(keys.refetch_unknown_kid).result(timeout=10) is True
            clock.now += 31
            assert _bounded(keys.wait_for_keys).result(timeout=10) is True
            assert idp.jwks_fetches == 3
    finally:
        loop.close()


class _LateCallbacks(concurrent.futures.Future):  # type: ignore[type-arg]
    """A fetch's future whose done-callbacks run only when the test says: its
    waiters wake first (concurrent.futures wakes them before it runs the callbacks)."""

    def __init__(self, held: list[Callable[[], object]]) -> None:
        super().__init__()
        self._held = held

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        self._held.append(lambda: fn(self))


class _CallbacksRunLate(FetchLoop):
    def __init__(self) -> None:
        super().__init__()
        self.held: list[Callable[[], object]] = []

    def submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        outer = _LateCallbacks(self.held)
        super().submit(coro).add_done_callback(lambda inner: outer.set_result(inner.result()))
        return outer


def test_a_finished_fetch_is_never_handed_out_as_the_one_in_flight() -> None:
    clock = Clock()
    heard: list[frozenset[str]] = []
    loop = _CallbacksRunLate()
    try:
        with FakeIdP() as idp:
            idp.jwks = jwks(public_jwk(A, kid="a"), public_jwk(B, kid="b"))
            keys = _keys(idp, loop, clock, listeners=(lambda _name, removed: heard.append(removed),))
            first = keys.fetch_now()
            assert first.result(timeout=10) is True  # done; its callback has not run yet
            idp.jwks = jwks(public_jwk(B, kid="b"))
            second = keys.fetch_now()
            assert second is not first
            assert second.result(timeout=10) is True and len(heard) == 1
            for callback in loop.held:
                callback()
    finally:
        loop.close()


# -- docs/security.md 52: key-change races ----------------------------------------

def test_sec_52_every_set_a_registry_makes_has_its_listener_once_across_many_reloads(loop: FetchLoop) -> None:
    heard: list[str] = []

    def on_change(name: str, removed: frozenset[str]) -> None:
        heard.append(name)

    registry = KeyRegistry(loop, on_change=on_change)
    algorithms = frozenset({"RS256"})
    with FakeIdP() as idp:
        for cycle in range(40):
            # Each reload changes the issuer's settings, so each makes a new set
            # and drops the last; once collected, its id is free for the next.
            settings = JwksSettings(fetch_timeout=1.0 + cycle % 2)
            keys = registry.get("remote", idp.issuer, idp.url + "/jwks", algorithms, settings)
            assert registry.get("remote", idp.issuer, idp.url + "/jwks", algorithms, settings) is keys
            registry.retain([keys])
            gc.collect()
            assert keys.listeners == (on_change,)
            idp.jwks = jwks(public_jwk(A, kid="a"), public_jwk(B, kid="b"))
            assert keys.fetch_now().result(timeout=10)
            idp.jwks = jwks(public_jwk(B, kid="b"))
            assert keys.fetch_now().result(timeout=10)
            assert heard == ["remote"] * (cycle + 1), f"cycle {cycle}: the removal went unheard"
            del keys


def _source(keys: PausingKeys, issuer: str) -> JwtSource:
    location = TokenLocation(header="authorization", prefix="Bearer ")
    return JwtSource(location, [JwtIssuer(
        name="remote", issuer=issuer, audiences=frozenset({"orders-api"}), algorithms=frozenset({"RS256"}),
        leeway=0.0, roles_claim=("groups",), scopes_claim=("scope",), locations=(location,), token_types=None,
        max_token_size=16384, keys=keys)])


def test_sec_52_a_token_verified_while_its_key_leaves_the_set_is_not_cached(loop: FetchLoop) -> None:
    cache = VerifiedTokenCache(100, time=time.time, monotonic=time.monotonic)
    settings = JwksSettings(fetch_timeout=2.0)
    with FakeIdP() as idp, concurrent.futures.ThreadPoolExecutor(1) as pool:
        # The listener is what the worker's does: the key set changed, invalidate.
        keys = RemoteKeys("remote", idp.issuer, idp.url + "/jwks", frozenset({"RS256"}), settings, loop=loop,
                          listeners=(lambda _name, _removed: cache.invalidate(),))
        idp.jwks = jwks(public_jwk(A, kid="a"), public_jwk(B, kid="b"))
        assert keys.fetch_now().result(timeout=10)
        pausing = PausingKeys(keys)
        source = _source(pausing, idp.issuer)

        # The control: with no key change, a token verified once is served from the cache.
        control = request(bearer=token(claims(iss=idp.issuer, sub="control"), key=A, kid="a"))
        assert source.authenticate(control, now=time.time(), cache=cache) is not None
        lookups = pausing.lookups
        assert source.authenticate(control, now=time.time(), cache=cache) is not None
        assert pausing.lookups == lookups

        # The race: the verification has read the set holding "a"; "a" leaves
        # the set (and the listener runs) before the verified token is put.
        raced = request(bearer=token(claims(iss=idp.issuer, sub="raced"), key=A, kid="a"))
        pausing.arm()
        verifying = pool.submit(source.authenticate, raced, now=time.time(), cache=cache)
        assert pausing.reached.wait(10)
        idp.jwks = jwks(public_jwk(B, kid="b"))
        assert keys.fetch_now().result(timeout=10)
        pausing.release.set()
        identity = verifying.result(timeout=10)
        assert identity is not None and identity.subject == "raced"  # it was in flight: answered with the old set

        # ...but not stored: asked again, it is verified afresh, and "a" is gone.
        lookups = pausing.lookups
        with pytest.raises(InvalidToken, match="unknown kid"):
            source.authenticate(raced, now=time.time(), cache=cache)
        assert pausing.lookups == lookups + 1
        with pytest.raises(InvalidToken, match="unknown kid"):
            source.authenticate(control, now=time.time(), cache=cache)
