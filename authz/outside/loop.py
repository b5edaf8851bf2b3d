"""The thread every outside call of a process runs on: one asyncio loop and
one HTTP client session, so a slow or dead server never holds up a decision
thread, nor the calls to another server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("authz.outside")


class FetchLoop:
    """One background thread running an asyncio loop for all outside calls
    of a process, with one HTTP client session."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        #: Sessions of their own (:meth:`own_session`), closed with the loop.
        self._own: list[aiohttp.ClientSession] = []
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

    async def own_session(self, limit: int) -> aiohttp.ClientSession:
        """A session with its own pool of at most ``limit`` connections, for
        one endpoint (:mod:`authz.outside.calls`): no other endpoint ever
        waits for a connection it holds. Closed with the loop."""
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit),
            timeout=aiohttp.ClientTimeout(total=None),
            headers={"accept": "application/json", "user-agent": "authz"},
        )
        self._own = [s for s in self._own if not s.closed]
        self._own.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shutdown() -> None:
            if self._session is not None:
                await self._session.close()
            for own in self._own:
                await own.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=2)
        except Exception:
            log.debug("outside-call loop shutdown", exc_info=True)
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
