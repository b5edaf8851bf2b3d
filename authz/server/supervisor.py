"""``authz serve``: the supervisor process.

It validates the policy, starts the worker processes (each a gRPC server on
the shared port, with its own caches), serves the HTTP side, watches the
policy and the files it names, and coordinates reloads and shutdown:

- a changed file is validated here first; only a valid policy is sent to the
  workers, each of which swaps it in atomically; an invalid one is logged,
  counted and shown at ``/readyz``, and the last good policy stays;
- a worker that dies is restarted, with backoff (no crash loop);
- SIGTERM (or SIGINT): ``/readyz`` turns 503, every worker stops accepting,
  finishes its in-flight checks and exits; then the supervisor exits 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from authz.config import load_policy
from authz.errors import ConfigError
from authz.policy import Policy
from authz.server import metrics
from authz.server.options import ServeOptions
from authz.server.worker import worker_main

log = logging.getLogger("authz.supervisor")

ASK_TIMEOUT = 5.0
STARTUP_TIMEOUT = 60.0
#: Seconds between two asks to a worker that is not ready yet.
READY_POLL = 0.05


class WorkerHandle:
    """A worker process and its control pipe (one request at a time)."""

    def __init__(self, index: int, options: ServeOptions) -> None:
        self.index = index
        self.options = options
        self.process: Any = None
        self.conn: Connection | None = None
        self.lock = asyncio.Lock()
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"authz-w{index}")
        self.started_at = 0.0
        self.restarts = 0

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=True)
        self.process = context.Process(target=worker_main, args=(self.options, self.index, child),
                                       name=f"authz-worker-{self.index}")
        self.process.start()
        child.close()
        self.conn = parent
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    async def ask(self, message: dict[str, Any], timeout: float = ASK_TIMEOUT) -> Any:
        """Send one control message; the reply, or None when there is none in time."""
        conn = self.conn
        if conn is None:
            return None
        loop = asyncio.get_running_loop()

        def exchange() -> Any:
            while conn.poll(0):  # a late reply to an earlier, timed-out request
                conn.recv()
            conn.send(message)
            if not conn.poll(timeout):
                raise TimeoutError
            return conn.recv()

        async with self.lock:
            try:
                return await loop.run_in_executor(self.executor, exchange)
            except (TimeoutError, EOFError, OSError):
                return None


def _digests(files: tuple[str, ...]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in files:
        try:
            with open(name, "rb") as handle:
                out[name] = hashlib.sha256(handle.read()).hexdigest()
        except OSError:
            out[name] = None
    return out


class Supervisor:
    def __init__(self, options: ServeOptions, policy: Policy) -> None:
        self.options = options
        self.policy = policy
        self.digests = _digests(policy.files)
        self.policy_hash = metrics.policy_hash(self.digests)
        self.reloads: Counter[str] = Counter()
        #: Workers started again after exiting, by index (authz_worker_restarts_total).
        self.restarted: Counter[int] = Counter()
        self.reload_error: str | None = None
        self.stopping = False
        self._stop = asyncio.Event()
        self._watch_stop = asyncio.Event()
        self.workers = [WorkerHandle(i, options) for i in range(options.workers)]

    # -- lifecycle ----------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        for worker in self.workers:
            worker.start()
        runner = await self._start_http()
        monitor = asyncio.create_task(self._monitor())
        watcher = asyncio.create_task(self._watch())
        ready = await self._wait_ready(STARTUP_TIMEOUT)
        if self.options.dry_run:
            log.warning("DRY RUN: every denial is logged and counted as 'would deny', and allowed")
        if ready:
            log.info("authz ready: %d worker(s) on %s, HTTP on %s", len(self.workers),
                     self.options.grpc_address, self.options.http_address)
        else:
            log.error("workers did not become ready within %ss", STARTUP_TIMEOUT)
        await self._stop.wait()
        log.info("stopping: draining in-flight checks")
        self.stopping = True
        self._watch_stop.set()
        monitor.cancel()
        for worker in self.workers:
            if worker.alive():
                os.kill(worker.process.pid, signal.SIGTERM)
        deadline = self.options.drain_timeout + 5
        await asyncio.gather(*(loop.run_in_executor(None, w.process.join, deadline) for w in self.workers if w.process))
        for worker in self.workers:
            if worker.alive():
                log.error("worker %d did not stop in time; killing it", worker.index)
                worker.process.kill()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(watcher, 2)
        await runner.cleanup()
        log.info("stopped")
        return 0

    async def _wait_ready(self, timeout: float) -> bool:
        """Until every worker reports ready (a worker answers "not ready"
        while it waits for its first key sets), at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                status = await worker.ask({"op": "status"}, timeout=remaining)
                if status and status.get("ready"):
                    break
                if not worker.alive():
                    return False
                await asyncio.sleep(READY_POLL)
        return True

    async def _monitor(self) -> None:
        """Restart workers that die, backing off up to 30 s per worker."""
        while not self.stopping:
            await asyncio.sleep(1.0)
            for worker in self.workers:
                if self.stopping or worker.alive() or worker.process is None:
                    continue
                code = worker.process.exitcode
                uptime = time.monotonic() - worker.started_at
                worker.restarts = worker.restarts + 1 if uptime < 60 else 1
                delay = min(30.0, 0.5 * 2 ** (worker.restarts - 1))
                log.error("worker %d exited (code %s); restarting in %.1fs", worker.index, code, delay)
                await asyncio.sleep(delay)
                if not self.stopping:
                    worker.start()
                    self.restarted[worker.index] += 1

    # -- reload -------------------------------------------------------------------

    async def _watch(self) -> None:
        from watchfiles import awatch

        while not self._watch_stop.is_set():
            directories = sorted({os.path.dirname(f) for f in self.policy.files if os.path.isdir(os.path.dirname(f))})
            restart = False
            async for _changes in awatch(*directories, watch_filter=None, debounce=200, step=50,
                                         stop_event=self._watch_stop, recursive=False):
                before = self.policy.files
                await self.reload_if_changed()
                if self.policy.files != before:
                    restart = True
                    break
            if not restart:
                return

    async def reload_if_changed(self) -> None:
        digests = _digests(self.policy.files)
        # After a failed reload, any change in the watched directories is a
        # reason to try again: the fix may be a file the last good policy
        # does not name (a new key file arriving after the policy naming it).
        if digests == self.digests and self.reload_error is None:
            return
        self.digests = digests
        await self.reload()

    async def reload(self) -> bool:
        loop = asyncio.get_running_loop()
        try:
            policy = await loop.run_in_executor(None, load_policy, self.options.config)
        except ConfigError as exc:
            self._reload_failed(str(exc))
            return False
        replies = await asyncio.gather(*(w.ask({"op": "reload"}, timeout=30) for w in self.workers))
        failed = [r for r in replies if not r or not r.get("ok")]
        if failed:
            errors = {str((r or {}).get("error", "no answer from worker")) for r in failed}
            self._reload_failed("; ".join(sorted(errors)))
            return False
        self.policy = policy
        self.digests = _digests(policy.files)
        self.policy_hash = metrics.policy_hash(self.digests)
        self.reload_error = None
        self.reloads["success"] += 1
        log.info("policy reloaded (generation %d)", policy.generation)
        return True

    def _reload_failed(self, error: str) -> None:
        self.reload_error = error
        self.reloads["failure"] += 1
        log.error("policy reload failed; the last good policy stays in force:\n%s", error)

    # -- the HTTP side ------------------------------------------------------------

    async def _start_http(self) -> Any:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host, _, port = self.options.http_address.rpartition(":")
        site = web.TCPSite(runner, host.strip("[]") or "0.0.0.0", int(port), reuse_address=True)
        await site.start()
        return runner

    async def _healthz(self, _request: Any) -> Any:
        from aiohttp import web

        return web.Response(text="ok\n")

    async def statuses(self) -> list[dict[str, Any] | None]:
        return list(await asyncio.gather(*(w.ask({"op": "status"}, timeout=2) for w in self.workers)))

    async def _readyz(self, _request: Any) -> Any:
        from aiohttp import web

        statuses = await self.statuses()
        ready = not self.stopping and all(s is not None and s.get("ready") for s in statuses)
        issuers: dict[str, Any] = {}
        for status in statuses:
            for name, state in (status or {}).get("issuers", {}).items():
                issuers.setdefault(name, state)
        body = {
            "ready": ready,
            "stopping": self.stopping,
            "policy_generation": self.policy.generation,
            "workers": [
                {"index": w.index, "pid": (s or {}).get("pid"), "alive": w.alive(), "ready": bool(s and s.get("ready")),
                 "generation": (s or {}).get("generation"), "decisions": (s or {}).get("decisions")}
                for w, s in zip(self.workers, statuses, strict=True)
            ],
            "issuers": issuers,
            "last_reload_error": self.reload_error,
        }
        return web.json_response(body, status=200 if ready else 503, dumps=lambda o: json.dumps(o, indent=2))

    async def _metrics(self, _request: Any) -> Any:
        from aiohttp import web

        replies = await asyncio.gather(*(w.ask({"op": "metrics"}, timeout=2) for w in self.workers))
        merged = metrics.merge(reply["metrics"] for reply in replies if reply and reply.get("ok"))
        merged.update(metrics.supervisor_series(
            generation=self.policy.generation, policy_hash=self.policy_hash, reloads=self.reloads,
            alive=sum(1 for w in self.workers if w.alive()), indexes=[w.index for w in self.workers],
            restarted=self.restarted,
            in_flight_limit=self.options.max_concurrent_checks))
        return web.Response(body=metrics.render(merged), headers={"content-type": metrics.CONTENT_TYPE})

    async def _jwks(self, _request: Any) -> Any:
        from aiohttp import web

        return web.json_response(self.policy.response.jwks(), headers={"cache-control": "public, max-age=60"})


def serve(options: ServeOptions) -> int:
    """Validate, then run until SIGTERM. Exit 0 after a clean drain, 2 on a
    policy that does not load at start."""
    options.configure_logging()
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    try:
        policy = load_policy(options.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, flush=True, file=sys.stderr)
        return 2
    options = replace(options, config=os.path.abspath(options.config))

    async def main() -> int:
        return await Supervisor(options, policy).run()

    return asyncio.run(main())
