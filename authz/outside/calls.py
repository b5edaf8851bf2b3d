"""Keyed outside calls: one answer per exact call (a token introspected, a
data source asked with one URL and body), where :mod:`authz.outside.fetcher`
keeps one value fresh.

- answers are cached by a digest of the exact call (the caller makes the
  key; a token is never a key, its hash is), bounded by entries and by the
  bytes their answers hold (``cachetools``), each for its own time to live;
- single flight: concurrent Checks for one key share one call;
- each call is bounded in time (``timeout``, the wait for a free slot
  included) and one endpoint holds at most ``max_concurrent`` calls on its
  own connection pool, so a slow endpoint never stalls the calls to another,
  nor a Check that does not need it (every call runs on the process's
  :class:`~authz.outside.loop.FetchLoop`, off the decision threads);
- stale-if-error where the caller says it is safe: an answer past its time
  to live is asked again, and only when that call fails is the old answer
  used, until its ``stale_ttl`` ends;
- a failed call answers for its key for ``error_ttl`` (a short outage costs
  the endpoint one call per key per ``error_ttl``, never one per Check);
- a caller that must wait gets the call's ``concurrent.futures.Future``
  (:class:`CallWaiting`), which the engine turns into
  :class:`authz.engine.CallPending`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from cachetools import LRUCache

from authz.outside.http import FetchError
from authz.outside.loop import FetchLoop, default_fetch_loop

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("authz.outside")

T = TypeVar("T")

#: Buckets of ``authz_outside_call_duration_seconds``.
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: What an entry costs beside its answer's own bytes (key, tuple, slots).
ENTRY_OVERHEAD = 240


@dataclass(frozen=True, slots=True)
class CallSettings:
    timeout: float = 1.0
    max_concurrent: int = 16
    max_entries: int = 10_000
    max_bytes: int = 8 * 2**20
    error_ttl: float = 1.0


class Answer(NamedTuple, Generic[T]):
    """What one call gave: ``value``, fresh for ``ttl`` seconds, then usable
    only when asking again fails, for ``stale_ttl`` more; ``size`` is the
    bytes it holds (its document's length)."""

    value: T
    ttl: float
    stale_ttl: float = 0.0
    size: int = 0


class CallWaiting(Exception):
    """No usable answer yet: a call is under way; wait on ``future``."""

    def __init__(self, future: concurrent.futures.Future[Any]) -> None:
        super().__init__("outside call in progress")
        self.future = future


class CallFailed(Exception):
    """No usable answer: the last call for this key failed (the message says
    how; it never holds the key nor what it was made from)."""


class _Entry:
    __slots__ = ("error", "failed_until", "fresh_until", "size", "usable_until", "value")

    def __init__(self) -> None:
        self.value: Any = None
        self.fresh_until = 0.0
        self.usable_until = 0.0  # stale-if-error ends
        self.failed_until = 0.0  # the last call failed; it answers until then
        self.error = ""
        self.size = ENTRY_OVERHEAD


class CallStats:
    """Counts for one endpoint (read by the worker's telemetry)."""

    __slots__ = ("bounds", "calls", "counts", "evictions", "failures", "hits", "misses", "seconds", "stale")

    def __init__(self) -> None:
        self.hits = 0  # answered from the cache
        self.stale = 0  # answered with a stale answer because the call failed
        self.misses = 0  # needed a call
        self.calls = 0
        self.failures = 0
        self.evictions = 0
        self.bounds = CALL_BUCKETS
        self.counts = [0] * (len(CALL_BUCKETS) + 1)
        self.seconds = 0.0

    def record(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.seconds += seconds

    def histogram(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.seconds,
                "count": sum(self.counts)}


class _Bounded(LRUCache):  # type: ignore[type-arg]
    """Bounded by the bytes its entries hold and by their number."""

    def __init__(self, max_entries: int, max_bytes: int, stats: CallStats) -> None:
        super().__init__(max_bytes, getsizeof=lambda entry: entry.size)
        self._max_entries = max_entries
        self._stats = stats

    def popitem(self) -> tuple[object, object]:
        item = super().popitem()
        self._stats.evictions += 1
        return item

    def __setitem__(self, key: Any, value: Any) -> None:
        try:
            super().__setitem__(key, value)
        except ValueError:  # larger than the whole budget: not kept
            self._stats.evictions += 1
            return
        while len(self) > self._max_entries:
            self.popitem()


#: A call: given the endpoint's session and the trace context to send
#: (W3C ``traceparent``/``tracestate`` headers, maybe none), its answer.
Call = Callable[["aiohttp.ClientSession", Mapping[str, str]], Awaitable[Answer[Any]]]

#: Request headers that carry the W3C trace context to a call.
TRACE_HEADERS = ("traceparent", "tracestate")

#: The tracer each call is a CLIENT span of (the worker's, when tracing is
#: on: :func:`trace_calls`); None: no spans.
_tracer: Any = None


def trace_calls(tracer: Any) -> None:
    """Make every outside call of this process a span of ``tracer`` (an
    OpenTelemetry tracer, or None for none), child of the trace context the
    caller hands :meth:`KeyedCalls.get`, and send the span's own context."""
    global _tracer
    _tracer = tracer


class KeyedCalls(Generic[T]):
    """The answers of one endpoint (an issuer's introspection, a data
    source), named ``name`` in logs and metrics (never its URL), of ``kind``."""

    def __init__(self, name: str, settings: CallSettings, *, kind: str = "call", loop: FetchLoop | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        #: What it calls (introspection, data): a metric label beside the name.
        self.kind = kind
        self.settings = settings
        self.stats = CallStats()
        self._loop = loop or default_fetch_loop()
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._data = _Bounded(max(settings.max_entries, 1), max(settings.max_bytes, ENTRY_OVERHEAD), self.stats)
        self._inflight: dict[bytes, concurrent.futures.Future[bool]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None

    def __len__(self) -> int:
        return len(self._data)

    def estimated_bytes(self) -> int:
        with self._lock:
            return int(self._data.currsize)

    # -- the decision side (any thread) -------------------------------------

    def get(self, key: bytes, call: Call, headers: Mapping[str, str] | None = None) -> T:
        """The answer for ``key``; raises :class:`CallWaiting` with the call
        to wait for (started by ``call(session, trace)`` unless one for the
        key is under way; ``trace``: the W3C trace context of ``headers``,
        the Check's request headers, read only when a call starts), or
        :class:`CallFailed` when the last call failed within ``error_ttl``
        and no stale answer may stand in."""
        now = self._monotonic()
        stats = self.stats
        with self._lock:
            entry = self._data.get(key)
            if entry is not None:
                if now < entry.fresh_until:
                    stats.hits += 1
                    return entry.value  # type: ignore[no-any-return]
                if now < entry.failed_until:
                    if entry.value is not None and now < entry.usable_until:
                        stats.stale += 1
                        return entry.value  # type: ignore[no-any-return]
                    stats.misses += 1
                    raise CallFailed(entry.error)
            stats.misses += 1
            future = self._inflight.get(key)
            if future is None or future.done():
                trace = {name: value for name in TRACE_HEADERS if (value := (headers or {}).get(name))}
                future = self._loop.submit(self._call(key, call, trace))
                self._inflight[key] = future
                future.add_done_callback(functools.partial(self._clear, key))
        raise CallWaiting(future)

    def peek(self, key: bytes) -> T | None:
        """The fresh answer for ``key``, or None; starts nothing."""
        with self._lock:
            entry = self._data.get(key)
            if entry is not None and self._monotonic() < entry.fresh_until:
                return entry.value  # type: ignore[no-any-return]
        return None

    def _clear(self, key: bytes, future: concurrent.futures.Future[bool]) -> None:
        with self._lock:
            if self._inflight.get(key) is future:
                del self._inflight[key]

    # -- calling (the loop thread) ------------------------------------------

    async def _call(self, key: bytes, call: Call, trace: Mapping[str, str]) -> bool:
        if _tracer is None:
            return await self._attempt(key, call, trace)
        from opentelemetry.trace import StatusCode

        span, sent = self._span(trace)
        ok = False
        try:
            ok = await self._attempt(key, call, sent)
        finally:
            span.set_attribute("authz.outside.outcome", "success" if ok else "failure")
            if not ok:
                span.set_status(StatusCode.ERROR, "call failed")
            span.end()
        return ok

    def _span(self, trace: Mapping[str, str]) -> tuple[Any, dict[str, str]]:
        from opentelemetry.trace import SpanKind, set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        propagator = TraceContextTextMapPropagator()
        span = _tracer.start_span(f"authz.outside.{self.kind}", context=propagator.extract(dict(trace)),
                                  kind=SpanKind.CLIENT,
                                  attributes={"authz.outside.name": self.name, "authz.outside.kind": self.kind})
        sent: dict[str, str] = {}
        propagator.inject(sent, context=set_span_in_context(span))
        return span, sent

    async def _attempt(self, key: bytes, call: Call, trace: Mapping[str, str]) -> bool:
        import aiohttp

        stats = self.stats
        stats.calls += 1
        started = self._monotonic()
        error: str
        try:
            async with asyncio.timeout(self.settings.timeout):
                async with self._slots_for_loop():
                    answer = await call(await self._session_for_loop(), trace)
        except TimeoutError:
            error = f"no answer within {self.settings.timeout:g}s"
        except (FetchError, ValueError) as exc:
            error = str(exc)
        except aiohttp.ClientError as exc:
            error = exc.__class__.__name__
        except Exception as exc:  # a bug: this key fails closed like any failed call
            log.exception("%s: call raised", self.name)
            error = f"internal error ({exc.__class__.__name__})"
        else:
            stats.record(self._monotonic() - started)
            self._store(key, answer)
            return True
        stats.record(self._monotonic() - started)
        stats.failures += 1
        log.warning("%s: call failed: %s", self.name, error)
        self._failed(key, error)
        return False

    def _slots_for_loop(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.max_concurrent)
        return self._slots

    async def _session_for_loop(self) -> aiohttp.ClientSession:
        """This endpoint's own session, whose pool holds ``max_concurrent``
        connections: no other endpoint waits for a connection it holds."""
        if self._session is None or self._session.closed:
            self._session = await self._loop.own_session(self.settings.max_concurrent)
        return self._session

    def _store(self, key: bytes, answer: Answer[T]) -> None:
        now = self._monotonic()
        entry = _Entry()
        entry.value = answer.value
        entry.fresh_until = now + max(answer.ttl, 0.0)
        entry.usable_until = entry.fresh_until + max(answer.stale_ttl, 0.0)
        entry.size = ENTRY_OVERHEAD + answer.size
        with self._lock:
            if answer.ttl > 0 or answer.stale_ttl > 0:
                self._data[key] = entry
            else:
                # Not to be kept: the waiting Check still reads it once.
                entry.fresh_until = now + self.settings.timeout
                self._data[key] = entry

    def _failed(self, key: bytes, error: str) -> None:
        now = self._monotonic()
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                entry = _Entry()
            entry.failed_until = now + self.settings.error_ttl
            entry.error = error
            self._data[key] = entry

    def close(self) -> None:
        """Close this endpoint's connections (a policy that was replaced)."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            self._loop.submit(session.close())


#: The endpoints of the policies in force, by what their answers depend on:
#: a reload that keeps an endpoint as it was (a secret rotated, another
#: section changed) keeps its answers. Weak: an endpoint no policy holds goes.
_ENDPOINTS: weakref.WeakValueDictionary[tuple[Any, ...], KeyedCalls[Any]] = weakref.WeakValueDictionary()
_ENDPOINTS_LOCK = threading.Lock()


def endpoint_calls(name: str, kind: str, settings: CallSettings, meaning: tuple[Any, ...]) -> KeyedCalls[Any]:
    """The :class:`KeyedCalls` of endpoint ``name`` whose answers mean what
    ``meaning`` says (every setting an answer depends on, never a secret):
    the one a policy in force holds already, or a new one."""
    key = (name, kind, settings, meaning)
    with _ENDPOINTS_LOCK:
        found = _ENDPOINTS.get(key)
        if found is None:
            found = _ENDPOINTS[key] = KeyedCalls(name, settings, kind=kind)
        return found


def all_of(futures: list[concurrent.futures.Future[Any]]) -> concurrent.futures.Future[Any]:
    """A future that completes when every one of ``futures`` has (the one
    future itself when there is one): a Check waiting on several outside
    calls at once waits on this."""
    if len(futures) == 1:
        return futures[0]
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()
    left = [len(futures)]
    lock = threading.Lock()

    def one(_future: concurrent.futures.Future[Any]) -> None:
        with lock:
            left[0] -= 1
            finished = left[0] == 0
        if finished:
            done.set_result(True)

    for future in futures:
        future.add_done_callback(one)
    return done
