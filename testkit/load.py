"""Steady load for fault tests: named streams of one request each, sent in a
loop by threads over keep-alive HTTP/1.1 connections, every answer counted by
status (``"no answer"`` when the connection failed instead).

Closed loop, no pacing: each thread sends its next request when the last is
answered. Waits are on counts of answers, never on time.
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from collections.abc import Mapping
from urllib.parse import urlsplit

NO_ANSWER = "no answer"


class Load:
    """``with Load(url, {"valid": headers, "forged": headers}) as load: ...``"""

    def __init__(self, url: str, streams: Mapping[str, Mapping[str, str]], *, threads: int = 2) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self.streams = {name: dict(headers) for name, headers in streams.items()}
        self.counts: dict[str, Counter[int | str]] = {name: Counter() for name in streams}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(name,), name=f"load-{name}-{i}", daemon=True)
                         for name in streams for i in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, stream: str) -> None:
        headers = self.streams[stream]
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if connection is None:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
            outcome, reusable = _send(connection, self.path, headers)
            if not reusable:
                connection.close()
                connection = None
            with self._changed:
                self.counts[stream][outcome] += 1
                self._changed.notify_all()
        if connection is not None:
            connection.close()

    def answered(self, stream: str) -> int:
        with self._changed:
            return sum(self.counts[stream].values())

    def wait_for(self, stream: str, count: int, timeout: float = 60.0) -> None:
        """Until ``stream`` has ``count`` more answers than now."""
        with self._changed:
            target = sum(self.counts[stream].values()) + count
            if not self._changed.wait_for(lambda: sum(self.counts[stream].values()) >= target, timeout):
                raise AssertionError(f"load: {stream} got fewer than {count} answers in {timeout}s: {self.counts}")

    def stop(self) -> dict[str, Counter[int | str]]:
        """Stop every thread (each finishes the request it is sending) and
        return the counts."""
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        with self._changed:
            return {name: Counter(counts) for name, counts in self.counts.items()}


def _send(connection: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> tuple[int | str, bool]:
    """One request: its status (or :data:`NO_ANSWER`), and whether the
    connection may carry the next one."""
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException):
        return NO_ANSWER, False
    return response.status, not response.will_close
