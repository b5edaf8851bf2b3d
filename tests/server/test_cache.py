"""The server's caches (authz/server/cache.py): the epoch that keeps a value
computed before a key change out of the cache (docs/security.md 52)."""

from __future__ import annotations

from authz.server.cache import ExpiringLRU


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_sec_52_a_value_computed_before_an_invalidation_is_refused() -> None:
    cache: ExpiringLRU[str] = ExpiringLRU(10, Clock())
    started = cache.epoch
    cache.put("kept", "v0", 30, epoch=started)
    cache.invalidate()  # keys changed while "late" was being computed
    cache.put("late", "v1", 30, epoch=started)
    assert cache.get("late") is None
    assert cache.get("kept") is None  # what was there before goes too
    # A value computed after the change is stored as usual.
    cache.put("fresh", "v2", 30, epoch=cache.epoch)
    assert cache.get("fresh") == "v2"


def test_sec_52_every_invalidation_moves_the_epoch_on() -> None:
    cache: ExpiringLRU[str] = ExpiringLRU(10, Clock())
    seen = {cache.epoch}
    for _ in range(5):
        before = cache.epoch
        cache.invalidate()
        assert cache.epoch not in seen
        seen.add(cache.epoch)
        cache.put("k", "v", 30, epoch=before)
        assert cache.get("k") is None


def test_sec_52_a_retired_cache_serves_and_stores_nothing() -> None:
    cache: ExpiringLRU[str] = ExpiringLRU(10, Clock())
    cache.put("k", "v", 30, epoch=cache.epoch)
    assert cache.get("k") == "v"
    cache.retire()
    assert cache.get("k") is None
    cache.put("k", "v", 30, epoch=cache.epoch)  # even with the epoch read after retiring
    assert cache.get("k") is None and len(cache) == 0


def test_entries_expire_and_a_zero_sized_cache_keeps_nothing() -> None:
    clock = Clock()
    cache: ExpiringLRU[str] = ExpiringLRU(10, clock)
    cache.put("k", "v", 5, epoch=cache.epoch)
    clock.now += 4.9
    assert cache.get("k") == "v"
    clock.now += 0.2
    assert cache.get("k") is None
    off: ExpiringLRU[str] = ExpiringLRU(0, clock)
    off.put("k", "v", 5, epoch=off.epoch)
    assert off.get("k") is None
