"""The keyed-call cache (authz.outside.calls) against a real local HTTP
endpoint: single flight, time to live, errors, stale-if-error, timeouts and
isolation per endpoint. Waits are on futures and conditions, never sleeps."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any

import pytest

from authz.outside.calls import Answer, CallFailed, CallSettings, CallWaiting, KeyedCalls, all_of
from authz.outside.http import FetchError, fetch_json
from authz.outside.loop import FetchLoop
from testkit.endpoint import Endpoint


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


def _calls(loop: FetchLoop, clock: Clock, **settings: Any) -> KeyedCalls[Any]:
    return KeyedCalls("source-a", CallSettings(**{"timeout": 2.0, **settings}), loop=loop, monotonic=clock)


def _getter(endpoint: Endpoint, *, ttl: float = 60.0, stale_ttl: float = 0.0) -> Any:
    async def call(session: Any, trace: Any) -> Answer[Any]:
        document = await fetch_json(session, endpoint.url + "/value", 4096)
        if not isinstance(document, dict):
            raise FetchError("not an object")
        return Answer(document, ttl, stale_ttl, 10)

    return call


def _wait(calls: KeyedCalls[Any], key: bytes, call: Any) -> concurrent.futures.Future[Any]:
    with pytest.raises(CallWaiting) as waiting:
        calls.get(key, call)
    return waiting.value.future


def test_a_miss_calls_then_the_answer_is_cached_until_its_ttl(loop: FetchLoop) -> None:
    clock = Clock()
    with Endpoint(lambda seen: (200, {"n": len(endpoint.seen)})) as endpoint:
        calls = _calls(loop, clock)
        call = _getter(endpoint, ttl=30)
        assert _wait(calls, b"k", call).result(timeout=10) is True
        assert calls.get(b"k", call) == {"n": 1}
        assert calls.get(b"k", call) == {"n": 1}
        assert endpoint.count() == 1 and calls.stats.hits == 2
        clock.now += 31
        assert _wait(calls, b"k", call).result(timeout=10) is True
        assert calls.get(b"k", call) == {"n": 2}


def test_concurrent_callers_of_one_key_share_one_call(loop: FetchLoop) -> None:
    clock = Clock()
    with Endpoint(lambda seen: (200, {"ok": True})) as endpoint:
        endpoint.mode = "gate"
        calls = _calls(loop, clock)
        call = _getter(endpoint)
        futures = [_wait(calls, b"same", call) for _ in range(20)]
        assert all(f is futures[0] for f in futures)
        assert endpoint.wait_for(1)
        endpoint.gate.set()
        assert futures[0].result(timeout=10) is True
        assert endpoint.count() == 1
        assert calls.get(b"same", call) == {"ok": True}


def test_different_keys_are_different_calls(loop: FetchLoop) -> None:
    clock = Clock()
    with Endpoint(lambda seen: (200, {})) as endpoint:
        calls = _calls(loop, clock)
        call = _getter(endpoint)
        first, second = _wait(calls, b"a", call), _wait(calls, b"b", call)
        assert first is not second
        assert first.result(timeout=10) and second.result(timeout=10)
        assert endpoint.count() == 2


@pytest.mark.parametrize("mode", ["500", "garbage", "huge", "drop"])
def test_a_failed_call_answers_for_its_key_for_error_ttl_then_is_asked_again(loop: FetchLoop, mode: str) -> None:
    clock = Clock()
    with Endpoint(lambda seen: (200, {"v": 1})) as endpoint:
        endpoint.mode = mode
        calls = _calls(loop, clock, error_ttl=1.0)
        call = _getter(endpoint)
        assert _wait(calls, b"k", call).result(timeout=10) is False
        asked = endpoint.count()  # aiohttp resends a GET once when the server drops it
        for _ in range(5):
            with pytest.raises(CallFailed):
                calls.get(b"k", call)
        assert calls.stats.calls == calls.stats.failures == 1  # no call per Check during an outage
        assert endpoint.count() == asked
        endpoint.mode = "ok"
        clock.now += 1.5
        assert _wait(calls, b"k", call).result(timeout=10) is True
        assert calls.get(b"k", call) == {"v": 1}


def test_a_hanging_endpoint_fails_within_the_timeout(loop: FetchLoop) -> None:
    clock = Clock()
    with Endpoint() as endpoint:
        endpoint.mode = "hang"
        calls = _calls(loop, clock, timeout=0.2)
        call = _getter(endpoint)
        assert _wait(calls, b"k", call).result(timeout=10) is False
        with pytest.raises(CallFailed, match=r"no answer within 0\.2s"):
            calls.get(b"k", call)


def test_stale_if_error_keeps_a_known_answer_only_while_the_call_fails(loop: FetchLoop) -> None:
    clock = Clock()
    with Endpoint(lambda seen: (200, {"v": len(endpoint.seen)})) as endpoint:
        calls = _calls(loop, clock)
        call = _getter(endpoint, ttl=10, stale_ttl=100)
        assert _wait(calls, b"k", call).result(timeout=10)
        clock.now += 11  # past its time to live: asked again first, never served stale while it answers
        endpoint.mode = "500"
        assert _wait(calls, b"k", call).result(timeout=10) is False
        assert calls.get(b"k", call) == {"v": 1}
        assert calls.stats.stale == 1
        clock.now += 100  # past stale_ttl: the outage now fails it
        assert _wait(calls, b"k", call).result(timeout=10) is False
        with pytest.raises(CallFailed):
            calls.get(b"k", call)


def test_a_new_key_fails_closed_during_an_outage_while_a_known_one_stands(loop: FetchLoop) -> None:
    clock = Clock()
    with Endpoint(lambda seen: (200, {"v": 1})) as endpoint:
        calls = _calls(loop, clock)
        call = _getter(endpoint, ttl=10, stale_ttl=100)
        assert _wait(calls, b"known", call).result(timeout=10)
        clock.now += 11
        endpoint.mode = "hang"
        calls.settings = CallSettings(timeout=0.2)
        assert _wait(calls, b"known", call).result(timeout=10) is False
        assert _wait(calls, b"new", call).result(timeout=10) is False
        assert calls.get(b"known", call) == {"v": 1}
        with pytest.raises(CallFailed):
            calls.get(b"new", call)


def test_a_slow_endpoint_does_not_hold_up_another(loop: FetchLoop) -> None:
    clock = Clock()
    with Endpoint(lambda seen: (200, {})) as slow, Endpoint(lambda seen: (200, {"fast": 1})) as fast:
        slow.mode = "gate"
        slow_calls = _calls(loop, clock, max_concurrent=2, timeout=10)
        fast_calls: KeyedCalls[Any] = KeyedCalls("source-b", CallSettings(timeout=10), loop=loop, monotonic=clock)
        held = [_wait(slow_calls, bytes([i]), _getter(slow)) for i in range(50)]
        assert slow.wait_for(2)
        assert _wait(fast_calls, b"k", _getter(fast)).result(timeout=10) is True
        assert fast_calls.get(b"k", _getter(fast)) == {"fast": 1}
        assert slow.count() == 2  # at most max_concurrent calls on the slow one
        assert not any(f.done() for f in held)
        slow.gate.set()
        assert all(f.result(timeout=20) for f in held)


def test_the_cache_is_bounded_by_entries_and_bytes(loop: FetchLoop) -> None:
    clock = Clock()
    with Endpoint(lambda seen: (200, {})) as endpoint:
        calls = _calls(loop, clock, max_entries=3)
        call = _getter(endpoint)
        for i in range(6):
            assert _wait(calls, bytes([i]), call).result(timeout=10)
        assert len(calls) == 3 and calls.stats.evictions == 3
        small = _calls(loop, clock, max_entries=100, max_bytes=1000)
        for i in range(10):
            assert _wait(small, bytes([i]), call).result(timeout=10)
        assert small.estimated_bytes() <= 1000


def test_all_of_completes_once_every_call_has() -> None:
    first: concurrent.futures.Future[int] = concurrent.futures.Future()
    second: concurrent.futures.Future[int] = concurrent.futures.Future()
    assert all_of([first]) is first
    both = all_of([first, second])
    first.set_result(1)
    assert not both.done()
    second.set_exception(RuntimeError("a failed call is done too"))
    assert both.done() and both.result() is True
