"""Bounded in-memory caches with an injected clock.

Both caches are LRU-bounded (``cachetools.LRUCache``), by entries and, when
given a ``max_bytes`` and a ``sizeof``, by the bytes their entries hold
(each entry's size estimated once, when stored: see authz.server.sizes), and
keep an absolute expiry per entry, checked on read, so no entry outlives the credential it
was made from. Each is owned by one worker; reads and writes take a lock, because the
worker's gRPC server may run Checks on a thread pool (uncontended, the lock
costs ~0.1 µs). :meth:`~ExpiringLRU.invalidate` is safe from any thread (a
key set changed on the fetch thread): it counts an epoch and raises a flag
that the next access acts on.

The epoch closes the race between computing a value and storing it
(docs/security.md 52): a caller reads ``epoch`` before it reads any key, and
``put`` refuses the value when an invalidation came in between, so nothing
computed from a key that has since left its set is ever stored. Reading is
untouched by it.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from cachetools import Cache, LRUCache

from authz.decision import Decision
from authz.identity.base import Identity
from authz.server.sizes import SAMPLE, decision_entry_bytes, estimate, token_entry_bytes

if TYPE_CHECKING:
    from authz.server.telemetry import DecisionLabels

V = TypeVar("V")


class Stats:
    __slots__ = ("evictions", "hits", "misses")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.evictions = 0


class _Evicting(LRUCache):  # type: ignore[type-arg]
    def __init__(self, maxsize: int, stats: Stats) -> None:
        super().__init__(maxsize)
        self._stats = stats

    def popitem(self) -> tuple[object, object]:
        item = super().popitem()
        self._stats.evictions += 1
        return item


class _EvictingSized(_Evicting):
    """Bounded by the bytes its entries hold (``maxsize``, each entry sized
    by ``sizeof`` when stored) and by their number (``max_entries``)."""

    def __init__(self, max_entries: int, max_bytes: int, stats: Stats,
                 sizeof: Callable[[Any], int]) -> None:
        LRUCache.__init__(self, max_bytes, getsizeof=sizeof)
        self._stats = stats
        self._max_entries = max_entries

    def __setitem__(self, key: Any, value: Any) -> None:
        try:
            super().__setitem__(key, value)
        except ValueError:  # larger than the whole budget: not cached
            self._stats.evictions += 1
            return
        while len(self) > self._max_entries:
            self.popitem()


class ExpiringLRU(Generic[V]):
    """key -> value with an absolute expiry (monotonic seconds) per entry."""

    def __init__(self, max_entries: int, monotonic: Callable[[], float], *, max_bytes: int = 0,
                 sizeof: Callable[[Any], int] | None = None) -> None:
        """``max_bytes`` (with ``sizeof((expiry, value))``, the bytes an
        entry holds, its key and index included) bounds the entries' estimated bytes too; 0: entries only."""
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stats = Stats()
        self._monotonic = monotonic
        self._data: _Evicting | None = None
        if max_entries > 0 and max_bytes > 0 and sizeof is not None:
            self._data = _EvictingSized(max_entries, max_bytes, self.stats, sizeof)
        elif max_entries > 0:
            self._data = _Evicting(max_entries, self.stats)
        self._stale = False
        self._epoch = 0
        self._retired = False
        self._lock = threading.Lock()

    @property
    def epoch(self) -> int:
        """How many invalidations so far: read it before computing a value,
        and hand it to :meth:`put`."""
        return self._epoch

    def __len__(self) -> int:
        return len(self._data) if self._data is not None else 0

    def estimated_bytes(self) -> int:
        """Memory the entries hold: their sizes as stored when bounded by
        bytes, else estimated from a sample (authz.server.sizes)."""
        data = self._data
        if data is None:
            return 0
        if isinstance(data, _EvictingSized):
            with self._lock:
                return int(data.currsize)
        with self._lock:
            # Cache.__getitem__, not the LRU's: reading a sample must not
            # make its entries recently used.
            sample: list[tuple[Any, Any]] = [(key, Cache.__getitem__(data, key))
                                             for key in itertools.islice(data, SAMPLE)]
            entries = len(data)
        return estimate(entries, sample)

    def get(self, key: Hashable) -> V | None:
        data = self._data
        if data is None:
            return None
        with self._lock:
            if self._stale:
                self._stale = False
                data.clear()
            entry = data.get(key)
            if entry is None:
                self.stats.misses += 1
                return None
            expires, value = entry
            if expires <= self._monotonic():
                del data[key]
                self.stats.misses += 1
                return None
            self.stats.hits += 1
            return value  # type: ignore[no-any-return]

    def put(self, key: Hashable, value: V, ttl: float, *, epoch: int) -> None:
        """Store ``value``, computed by a caller that read ``epoch`` before it
        began; refused when the cache was invalidated (or retired) since."""
        data = self._data
        if data is None or ttl <= 0:
            return
        with self._lock:
            if epoch != self._epoch or self._retired:
                return
            if self._stale:
                self._stale = False
                data.clear()
            data[key] = (self._monotonic() + ttl, value)

    def invalidate(self) -> None:
        """Drop every entry before the next access, and refuse every value
        computed before now (safe from any thread)."""
        with self._lock:
            self._epoch += 1
            self._stale = True

    def retire(self) -> None:
        """Invalidate for good: nothing is served or stored from now on (a
        policy that was replaced, which no key change reaches any more)."""
        with self._lock:
            self._retired = True
            self._epoch += 1
            self._stale = True


def decision_cache(max_entries: int, max_bytes: int, monotonic: Callable[[], float]) -> ExpiringLRU[Cached]:
    """The decision cache: each entry (a :class:`Cached`) sized by
    :func:`authz.server.sizes.decision_entry_bytes` when stored."""
    return ExpiringLRU(max_entries, monotonic, max_bytes=max_bytes, sizeof=decision_entry_bytes)


@dataclass(frozen=True, slots=True)
class Cached:
    """A decision-cache entry (authz.server.service)."""

    decision: Decision
    response: Any  # the prepared answer of the door that asked (allow); None: built per request
    label: DecisionLabels  # the decision's metric labels, bound once (its door's: keys never cross doors)


class VerifiedTokenCache:
    """Verified tokens: digest -> identity, never beyond the token's expiry."""

    def __init__(self, max_entries: int, *, time: Callable[[], float], monotonic: Callable[[], float],
                 max_bytes: int = 0) -> None:
        self._lru: ExpiringLRU[Identity] = ExpiringLRU(max_entries, monotonic, max_bytes=max_bytes,
                                                       sizeof=token_entry_bytes)
        self._time = time

    @property
    def stats(self) -> Stats:
        return self._lru.stats

    def __len__(self) -> int:
        return len(self._lru)

    def estimated_bytes(self) -> int:
        return self._lru.estimated_bytes()

    def get(self, key: bytes, now: float) -> Identity | None:
        identity = self._lru.get(key)
        if identity is not None and identity.expires_at is not None and identity.expires_at <= now:
            return None
        return identity

    @property
    def epoch(self) -> int:
        return self._lru.epoch

    def put(self, key: bytes, identity: Identity, now: float, *, epoch: int) -> None:
        if identity.expires_at is None:
            return
        self._lru.put(key, identity, identity.expires_at - now, epoch=epoch)

    def invalidate(self) -> None:
        self._lru.invalidate()

    def retire(self) -> None:
        self._lru.retire()
