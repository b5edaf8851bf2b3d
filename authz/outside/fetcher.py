"""One remote value kept fresh in memory: the loop every outside call uses
(a key set today; introspection results and data callouts next).

- a background refresh every ``refresh_interval``, with backoff on failure;
- a refetch on demand (an unknown ``kid``) at most once per
  ``min_refetch_interval``, and every concurrent caller shares the one in
  flight (single flight);
- each call is bounded in time (``fetch_timeout``); what it downloads, in
  size (:mod:`authz.outside.http`);
- when calls fail the last good value keeps serving until ``max_stale``
  (stale-if-error);
- a caller that must wait is handed the call's ``concurrent.futures.Future``
  and waits within its own deadline (:class:`authz.engine.CallPending`).

A subclass says what to download (:meth:`Fetcher.download`) and what a new
value means (:meth:`Fetcher.accepted`).
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from authz.outside.http import FetchError
from authz.outside.loop import FetchLoop, default_fetch_loop

log = logging.getLogger("authz.outside")

T = TypeVar("T")


class FetchSettings(Protocol):
    @property
    def refresh_interval(self) -> float: ...
    @property
    def min_refetch_interval(self) -> float: ...
    @property
    def max_stale(self) -> float: ...
    @property
    def fetch_timeout(self) -> float: ...


@dataclass
class FetchState(Generic[T]):
    value: T | None = None
    loaded_at: float | None = None  # monotonic time of the last successful call
    last_error: str | None = None
    last_attempt: float | None = None
    fetches: int = 0
    successes: int = 0
    failures: int = 0  # consecutive, for backoff
    failures_total: int = 0
    fetch_seconds: float = 0.0  # time spent in calls, successful or not


class Fetcher(abc.ABC, Generic[T]):
    """A remote value, fetched on ``loop`` (the process's by default)."""

    #: What the log calls it ("issuer", ...), before its name.
    what = "outside call"

    def __init__(self, name: str, settings: FetchSettings, *, loop: FetchLoop | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.settings = settings
        self._loop = loop or default_fetch_loop()
        self._monotonic = monotonic
        self._state: FetchState[T] = FetchState()
        # Re-entrant: a call can finish on the loop thread before submit()
        # returns, and then its done-callback (_clear_inflight) runs at once,
        # in the thread that still holds this lock inside _start_locked.
        self._lock = threading.RLock()
        self._inflight: concurrent.futures.Future[bool] | None = None
        self._last_refetch: float | None = None
        self._refresher: concurrent.futures.Future[Any] | None = None

    # -- what a subclass says -------------------------------------------------

    @abc.abstractmethod
    async def download(self) -> T:
        """The new value; raises FetchError or ValueError (said in the status)."""

    def accepted(self, old: T | None, new: T) -> None:
        """Told on the loop thread once ``new`` is in place of ``old``."""

    # -- the decision side (any thread) -------------------------------------

    def value(self) -> T | None:
        """The last good value, or None (none yet, or older than ``max_stale``)."""
        state = self._state
        if state.value is None or state.loaded_at is None:
            return None
        if self._monotonic() - state.loaded_at > self.settings.max_stale:
            return None
        return state.value

    def wait_for_value(self) -> concurrent.futures.Future[bool] | None:
        """The call to wait for when no usable value is held: the one in
        flight, or a new one unless the refetch cooldown holds."""
        with self._lock:
            if (running := self._running_locked()) is not None:
                return running
        return self.refetch()

    def refetch(self) -> concurrent.futures.Future[bool] | None:
        """A call now (the value may be out of date), shared with the one in
        flight; None while the cooldown since the last refetch holds."""
        with self._lock:
            if (running := self._running_locked()) is not None:
                return running
            now = self._monotonic()
            last = self._last_refetch
            if last is not None and now - last < self.settings.min_refetch_interval:
                return None
            self._last_refetch = now
            return self._start_locked()

    def state_label(self) -> str:
        state = self._state
        if state.value is None:
            return "loading" if state.last_error is None else "failed"
        if self.value() is None:
            return "expired"
        return "ok" if state.last_error is None else "stale"

    def counts(self) -> dict[str, Any]:
        state = self._state
        age = None if state.loaded_at is None else round(self._monotonic() - state.loaded_at, 3)
        return {"age_seconds": age, "fetches": state.fetches, "successes": state.successes,
                "failures_total": state.failures_total, "fetch_seconds": round(state.fetch_seconds, 6),
                "last_error": state.last_error}

    @property
    def fetch_count(self) -> int:
        return self._state.fetches

    # -- calling (the loop thread) ----------------------------------------------

    def start(self) -> None:
        """Start the background refresh (the first call begins at once)."""
        if self._refresher is None:
            self._refresher = self._loop.submit(self._refresh_forever())

    def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None

    def fetch_now(self) -> concurrent.futures.Future[bool]:
        with self._lock:
            if (running := self._running_locked()) is not None:
                return running
            return self._start_locked()

    def _running_locked(self) -> concurrent.futures.Future[bool] | None:
        """The call under way, if any. One that has finished is not, even
        before its done-callback clears it: its waiters may wake first, and
        a call they ask for next must be a new one."""
        future = self._inflight
        return future if future is not None and not future.done() else None

    def _start_locked(self) -> concurrent.futures.Future[bool]:
        future = self._loop.submit(self._fetch_once())
        self._inflight = future
        future.add_done_callback(self._clear_inflight)
        return future

    def _clear_inflight(self, future: concurrent.futures.Future[bool]) -> None:
        with self._lock:
            if self._inflight is future:
                self._inflight = None

    async def _refresh_forever(self) -> None:
        while True:
            future = self.fetch_now()
            try:
                ok = await asyncio.wrap_future(future)
            except asyncio.CancelledError:
                raise
            except Exception:
                ok = False
            if ok:
                delay = self.settings.refresh_interval
            else:
                # Back off from 1 s, doubling, never beyond the refresh interval.
                backoff = min(self.settings.refresh_interval, 2.0 ** min(self._state.failures, 10))
                delay = backoff * random.uniform(0.8, 1.2)
            await asyncio.sleep(delay)

    async def _fetch_once(self) -> bool:
        import aiohttp

        state = self._state
        state.last_attempt = started = self._monotonic()
        state.fetches += 1
        try:
            async with asyncio.timeout(self.settings.fetch_timeout):
                value = await self.download()
        except TimeoutError:
            return self._failed(f"fetch took longer than {self.settings.fetch_timeout:g}s")
        except (FetchError, ValueError) as exc:
            return self._failed(str(exc))
        except aiohttp.ClientError as exc:
            return self._failed(f"{exc.__class__.__name__}: {exc}")
        finally:
            state.fetch_seconds += self._monotonic() - started
        old = state.value
        state.value = value
        state.loaded_at = self._monotonic()
        state.last_error = None
        state.failures = 0
        state.successes += 1
        self.accepted(old, value)
        return True

    def _failed(self, message: str) -> bool:
        state = self._state
        state.last_error = message
        state.failures += 1
        state.failures_total += 1
        log.warning("%s %s: fetch failed: %s", self.what, self.name, message)
        return False
