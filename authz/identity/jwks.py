"""Key sets of JWT issuers: local files, and remote sets cached in memory.

A remote set (``jwks_uri`` or OIDC discovery) is fetched on a background
event loop thread, so a slow or dead issuer never holds up a decision for
another issuer, nor the thread that serves checks. The decision side only
ever reads the current set, or is handed a ``concurrent.futures.Future`` to
wait on within its own deadline (docs/security.md D and E):

- background refresh every ``refresh_interval``, with backoff on failure;
- an unknown ``kid`` starts at most one refetch per ``min_refetch_interval``,
  and every concurrent caller shares the one in flight;
- each fetch is bounded in time (``fetch_timeout``) and size (1 MiB);
- when fetches fail the last good set keeps serving until ``max_stale``;
- keys that leave the set stop verifying at once, and listeners are told so
  that decisions cached for their tokens are dropped.

A :class:`KeyRegistry` keeps the remote sets across policy reloads, and hands
every set it makes its one key-change listener when the set is made: no set
can exist without it, and none holds it twice (docs/security.md 52).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authz.identity.fetch import MAX_DOCUMENT_BYTES, FetchError, check_url, fetch_json
from authz.identity.keys import KeySet, parse_jwks

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("authz.jwks")


@dataclass(frozen=True, slots=True)
class JwksSettings:
    refresh_interval: float = 600.0
    min_refetch_interval: float = 30.0
    max_stale: float = 86400.0
    fetch_timeout: float = 2.0
    max_bytes: int = MAX_DOCUMENT_BYTES


class FileKeys:
    """A key set read from a local file when the policy was compiled; the
    policy reload that watches the file replaces it."""

    def __init__(self, keyset: KeySet, path: str) -> None:
        self.keyset = keyset
        self.path = path

    def current(self) -> KeySet:
        return self.keyset

    def wait_for_keys(self) -> None:
        return None

    def refetch_unknown_kid(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"source": "file", "state": "ok", "keys": len(self.keyset.keys), "path": self.path}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class FetchLoop:
    """One background thread running an asyncio loop for all key fetches of
    a process, with one HTTP client session."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="authz-jwks", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._ensure())

    def call_soon(self, callback: Callable[[], None]) -> None:
        self._ensure().call_soon_threadsafe(callback)

    async def session(self) -> aiohttp.ClientSession:
        import aiohttp  # only processes that fetch remote keys pay for it

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"accept": "application/json", "user-agent": "authz-jwks"},
            )
        return self._session

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shutdown() -> None:
            if self._session is not None:
                await self._session.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=2)
        except Exception:
            log.debug("jwks loop shutdown", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=2)
            if not self._thread.is_alive():
                loop.close()


_DEFAULT_LOOP: FetchLoop | None = None


def default_fetch_loop() -> FetchLoop:
    global _DEFAULT_LOOP
    if _DEFAULT_LOOP is None:
        _DEFAULT_LOOP = FetchLoop()
    return _DEFAULT_LOOP


@dataclass
class _State:
    keyset: KeySet | None = None
    loaded_at: float | None = None  # monotonic time of the last successful fetch
    last_error: str | None = None
    last_attempt: float | None = None
    fetches: int = 0
    successes: int = 0
    failures: int = 0  # consecutive, for backoff
    failures_total: int = 0
    fetch_seconds: float = 0.0  # time spent in fetches, successful or not
    jwks_uri: str | None = None


#: ``listener(issuer_name, removed_thumbprints)``, run on the fetch thread
#: after a new set without those keys is in place.
KeyListener = Callable[[str, frozenset[str]], None]


class RemoteKeys:
    """The cached key set of one remote issuer. Its ``listeners`` are fixed
    when it is made."""

    def __init__(
        self,
        name: str,
        issuer: str,
        jwks_uri: str | None,
        algorithms: frozenset[str],
        settings: JwksSettings,
        *,
        loop: FetchLoop | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        listeners: Iterable[KeyListener] = (),
    ) -> None:
        self.name = name
        self.issuer = issuer
        self.configured_jwks_uri = jwks_uri
        self.algorithms = algorithms
        self.settings = settings
        self._loop = loop or default_fetch_loop()
        self._monotonic = monotonic
        self._state = _State()
        # Re-entrant: a fetch can finish on the loop thread before submit()
        # returns, and then its done-callback (_clear_inflight) runs at once,
        # in the thread that still holds this lock inside _start_locked.
        self._lock = threading.RLock()
        self._inflight: concurrent.futures.Future[bool] | None = None
        self._last_kid_refetch: float | None = None
        self._refresher: concurrent.futures.Future[Any] | None = None
        self.listeners: tuple[KeyListener, ...] = tuple(listeners)

    # -- the decision side (any thread) -------------------------------------

    def current(self) -> KeySet | None:
        state = self._state
        if state.keyset is None or state.loaded_at is None:
            return None
        if self._monotonic() - state.loaded_at > self.settings.max_stale:
            return None
        return state.keyset

    def wait_for_keys(self) -> concurrent.futures.Future[bool] | None:
        """The fetch to wait for when no usable set is held: the one in
        flight, or a new one unless the refetch cooldown holds."""
        with self._lock:
            if (running := self._running_locked()) is not None:
                return running
        return self.refetch_unknown_kid()

    def refetch_unknown_kid(self) -> concurrent.futures.Future[bool] | None:
        with self._lock:
            if (running := self._running_locked()) is not None:
                return running
            now = self._monotonic()
            last = self._last_kid_refetch
            if last is not None and now - last < self.settings.min_refetch_interval:
                return None
            self._last_kid_refetch = now
            return self._start_locked()

    def status(self) -> dict[str, Any]:
        state = self._state
        now = self._monotonic()
        age = None if state.loaded_at is None else round(now - state.loaded_at, 3)
        if state.keyset is None:
            label = "loading" if state.last_error is None else "failed"
        elif self.current() is None:
            label = "expired"
        else:
            label = "ok" if state.last_error is None else "stale"
        return {
            "source": "remote",
            "state": label,
            "keys": len(state.keyset.keys) if state.keyset else 0,
            "age_seconds": age,
            "fetches": state.fetches,
            "successes": state.successes,
            "failures_total": state.failures_total,
            "fetch_seconds": round(state.fetch_seconds, 6),
            "last_error": state.last_error,
            "jwks_uri": state.jwks_uri or self.configured_jwks_uri,
        }

    @property
    def fetch_count(self) -> int:
        return self._state.fetches

    # -- fetching (the fetch loop thread) -----------------------------------

    def start(self) -> None:
        """Start the background refresh (the first fetch begins at once)."""
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
        """The fetch under way, if any. One that has finished is not, even
        before its done-callback clears it: its waiters may wake first, and
        a fetch they ask for next must be a new one."""
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
                keyset = await self._download()
        except TimeoutError:
            return self._failed(f"fetch took longer than {self.settings.fetch_timeout:g}s")
        except (FetchError, ValueError) as exc:
            return self._failed(str(exc))
        except aiohttp.ClientError as exc:
            return self._failed(f"{exc.__class__.__name__}: {exc}")
        finally:
            state.fetch_seconds += self._monotonic() - started
        old = state.keyset
        state.keyset = keyset
        state.loaded_at = self._monotonic()
        state.last_error = None
        state.failures = 0
        state.successes += 1
        if keyset.skipped:
            log.warning("issuer %s: skipped keys: %s", self.name, "; ".join(keyset.skipped))
        if old is not None:
            removed = old.thumbprints - keyset.thumbprints
            if removed:
                log.info("issuer %s: %d key(s) left the key set", self.name, len(removed))
                for listener in self.listeners:
                    try:
                        listener(self.name, frozenset(removed))
                    except Exception:
                        log.exception("key-change listener failed")
        return True

    def _failed(self, message: str) -> bool:
        state = self._state
        state.last_error = message
        state.failures += 1
        state.failures_total += 1
        log.warning("issuer %s: key set fetch failed: %s", self.name, message)
        return False

    async def _download(self) -> KeySet:
        session = await self._loop.session()
        jwks_uri = self.configured_jwks_uri
        if jwks_uri is None:
            discovery_url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            document = await fetch_json(session, discovery_url, self.settings.max_bytes)
            if not isinstance(document, dict):
                raise FetchError("discovery document is not a JSON object")
            if document.get("issuer") != self.issuer:
                raise FetchError("discovery document names a different issuer")
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise FetchError("discovery document has no jwks_uri")
            problem = check_url(jwks_uri)
            if problem:
                raise FetchError(f"discovery jwks_uri {problem}")
            self._state.jwks_uri = jwks_uri
        document = await fetch_json(session, jwks_uri, self.settings.max_bytes)
        return parse_jwks(document, self.algorithms, allow_symmetric=False)


class KeyRegistry:
    """Remote key sets that outlive a policy: a reload that keeps an issuer
    keeps its cached keys instead of fetching them again.

    ``on_change`` is the key-change listener of every set the registry makes,
    given to each when it is made: whatever reloads come and go, each set has
    it exactly once, and a set made later can never be mistaken for one made
    earlier."""

    def __init__(self, loop: FetchLoop | None = None, *, on_change: KeyListener | None = None) -> None:
        self.loop = loop
        self.on_change = on_change
        self._sets: dict[tuple[Any, ...], RemoteKeys] = {}

    def get(self, name: str, issuer: str, jwks_uri: str | None, algorithms: frozenset[str], settings: JwksSettings) -> RemoteKeys:
        key = (name, issuer, jwks_uri, algorithms, settings)
        found = self._sets.get(key)
        if found is None:
            listeners = () if self.on_change is None else (self.on_change,)
            found = RemoteKeys(name, issuer, jwks_uri, algorithms, settings, loop=self.loop, listeners=listeners)
            self._sets[key] = found
        return found

    def retain(self, keep: Iterable[RemoteKeys]) -> None:
        """Stop and forget the sets no longer in use (compared as objects,
        never by ``id``, which a later object may reuse)."""
        kept = list(keep)
        for key, keys in list(self._sets.items()):
            if not any(keys is k for k in kept):
                keys.stop()
                del self._sets[key]
