"""``authz serve``: the supervisor process.

It validates the policy, starts the worker processes (each a gRPC server on
the shared port, with its own caches), serves the HTTP side, watches the
policy and the files it names, and coordinates reloads and shutdown:

- every address the workers listen on is claimed first (``binding``): one
  that is taken, by any process, another authz included, ends ``authz
  serve`` at once, naming it, before any worker starts;
- a changed file is validated here first; only a valid policy is sent to the
  workers, each of which swaps it in atomically; an invalid one is logged,
  counted and shown at ``/readyz``, and the last good policy stays;
- every worker runs the supervisor's generation (``generation``): one that
  cannot load it is not ready, and is asked again until it does;
- a worker that dies is restarted, with backoff (no crash loop);
- SIGTERM (or SIGINT): ``/readyz`` turns 503, every worker stops accepting,
  finishes its in-flight checks and exits; then the supervisor exits 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
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

from authz.errors import ConfigError
from authz.policy import Policy
from authz.server import metrics
from authz.server.binding import EXIT_ADDRESS_IN_USE, AddressInUse, claim_all, describe
from authz.server.caller_identity import TlsFiles
from authz.server.generation import Target, file_digests, load_consistent
from authz.server.options import ServeOptions
from authz.server.telemetry import labels
from authz.server.worker import worker_main

log = logging.getLogger("authz.supervisor")

ASK_TIMEOUT = 5.0
STARTUP_TIMEOUT = 60.0
#: Seconds between two asks to a worker that is not ready yet.
READY_POLL = 0.05


#: The module the workers' parent imports before forking any (shared code).
PRELOAD = "authz.server.preload"


def worker_context() -> Any:
    """Workers are forked from a fork server that imported ``PRELOAD`` once:
    never from the supervisor itself (it runs threads and an event loop),
    and without importing everything again per worker as ``spawn`` would."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([PRELOAD])
    return context


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

    def start(self, target: Target) -> None:
        context = worker_context()
        parent, child = context.Pipe(duplex=True)
        self.process = context.Process(target=worker_main, args=(self.options, self.index, child, target.as_message()),
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


def addresses(options: ServeOptions) -> list[tuple[str, str]]:
    """Every (address, what) the workers listen on."""
    out = [(options.grpc_address, "gRPC door")]
    host = options.grpc_address.rsplit(":", 1)[0]
    for index in range(options.workers):
        port = options.worker_port(index)
        if port is not None:
            out.append((f"{host}:{port}", f"worker {index}'s gRPC port"))
    if options.http_authz_address:
        out.append((options.http_authz_address, "HTTP door"))
    return out


def _failed_files(exc: ConfigError) -> dict[str, str]:
    """Each file a failed load found problems in, with its team (a policy
    directory's team file) or ""."""
    teams: dict[str, str] = getattr(exc, "teams", {})
    return {p.file: teams.get(p.file, "") for p in exc.problems}


class Supervisor:
    def __init__(self, options: ServeOptions, policy: Policy, digests: dict[str, str | None] | None = None) -> None:
        self.options = options
        self.policy = policy
        self.digests = digests if digests is not None else file_digests(policy.files)
        #: The generation every worker must run (docs/operations.md, "Readiness").
        self.target = Target(policy.generation, self.digests)
        self.policy_hash = metrics.policy_hash(self.digests)
        self.reloads: Counter[str] = Counter()
        #: Workers started again after exiting, by index (authz_worker_restarts_total).
        self.restarted: Counter[int] = Counter()
        self.reload_error: str | None = None
        #: The files the last failed reload found problems in, with their
        #: team ("" for a policy's root or only file).
        self.reload_error_files: dict[str, str] = {}
        self.stopping = False
        self._stop = asyncio.Event()
        self._watch_stop = asyncio.Event()
        self.workers = [WorkerHandle(i, options) for i in range(options.workers)]

    # -- lifecycle ----------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        try:
            holds = claim_all(addresses(self.options))
        except AddressInUse as exc:
            return _cannot_listen(str(exc))
        try:
            return await self._run(loop)
        finally:
            holds.release()

    async def _run(self, loop: asyncio.AbstractEventLoop) -> int:
        try:
            runner = await self._start_http()
        except OSError as exc:
            return _cannot_listen(describe(self.options.http_address, "health and metrics", exc))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        for worker in self.workers:
            worker.start(self.target)
        monitor = asyncio.create_task(self._monitor())
        watcher = asyncio.create_task(self._watch())
        ready = await self._wait_ready(STARTUP_TIMEOUT)
        if self.options.dry_run:
            log.warning("DRY RUN: every denial is logged and counted as 'would deny', and allowed")
        taken = [w for w in self.workers if not w.alive() and w.process.exitcode == EXIT_ADDRESS_IN_USE]
        if taken:
            # The worker logged the address; a restart would only fail again.
            _cannot_listen(f"worker {taken[0].index} could not listen on its address; stopping")
            self._stop.set()
        elif ready:
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
        return EXIT_ADDRESS_IN_USE if taken else 0

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
        """Restart workers that die, backing off up to 30 s per worker; ask
        any worker not on the supervisor's generation to load it."""
        while not self.stopping:
            await asyncio.sleep(1.0)
            await self._converge()
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
                    worker.start(self.target)
                    self.restarted[worker.index] += 1

    async def _converge(self) -> None:
        target = self.target
        statuses = await self.statuses()
        behind = [w for w, s in zip(self.workers, statuses, strict=True)
                  if s is not None and s.get("generation") != target.generation]
        if behind:
            await asyncio.gather(*(w.ask({"op": "reload", "target": target.as_message()}, timeout=30) for w in behind))

    # -- reload -------------------------------------------------------------------

    async def _watch(self) -> None:
        from watchfiles import awatch

        while not self._watch_stop.is_set():
            files = self.policy.files
            directories = sorted({os.path.dirname(f) for f in files if os.path.isdir(os.path.dirname(f))}
                                 | {f for f in files if os.path.isdir(f)})
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
        digests = file_digests(self.policy.files)
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
            policy, digests = await loop.run_in_executor(None, load_consistent, self.options.config)
            self.options.check_binding(policy)
        except ConfigError as exc:
            self._reload_failed(str(exc), _failed_files(exc))
            return False
        # Valid: this is the generation every worker must run from now on.
        self.policy = policy
        self.digests = digests
        self.policy_hash = metrics.policy_hash(self.digests)
        self.target = target = Target(policy.generation, digests)
        replies = await asyncio.gather(*(w.ask({"op": "reload", "target": target.as_message()}, timeout=30)
                                         for w in self.workers))
        failed = [(w.index, r) for w, r in zip(self.workers, replies, strict=True) if not r or not r.get("ok")]
        if failed:
            errors = "; ".join(sorted({str((r or {}).get("error", "no answer from worker")) for _i, r in failed}))
            self.reload_error = (f"worker(s) {', '.join(str(i) for i, _r in failed)} could not load policy "
                                 f"generation {target.generation} (not ready until they do): {errors}")
            self.reloads["failure"] += 1
            log.error("%s", self.reload_error)
            return False
        self.reload_error = None
        self.reload_error_files = {}
        self.reloads["success"] += 1
        log.info("policy reloaded (generation %d)", policy.generation)
        return True

    def _reload_failed(self, error: str, files: dict[str, str] | None = None) -> None:
        self.reload_error = error
        self.reload_error_files = files or {}
        self.reloads["failure"] += 1
        where = ", ".join(f"{file} (team {team})" if team else file for file, team in self.reload_error_files.items())
        log.error("policy reload failed%s; the last good policy stays in force:\n%s",
                  f" in {where}" if where else "", error)

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
        generation = self.target.generation
        ready = not self.stopping and all(s is not None and s.get("ready") and s.get("generation") == generation
                                          for s in statuses)
        issuers: dict[str, Any] = {}
        for status in statuses:
            for name, state in (status or {}).get("issuers", {}).items():
                issuers.setdefault(name, state)
        body = {
            "ready": ready,
            "stopping": self.stopping,
            "policy_generation": generation,
            "workers": [
                {"index": w.index, "pid": (s or {}).get("pid"), "alive": w.alive(),
                 "ready": bool(s and s.get("ready") and s.get("generation") == generation),
                 "generation": (s or {}).get("generation"), "decisions": (s or {}).get("decisions"),
                 "last_reload_error": (s or {}).get("last_reload_error")}
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
        merged["authz_config_reload_error"] = {labels(file=f, team=t): 1 for f, t in self.reload_error_files.items()}
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
        policy, digests = load_consistent(options.config)
        options.check_binding(policy)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, flush=True, file=sys.stderr)
        return 2
    if options.grpc_tls_cert is not None and options.grpc_tls_key is not None:
        try:
            TlsFiles(options.grpc_tls_cert, options.grpc_tls_key, options.grpc_client_ca).read()
        except (OSError, ValueError) as exc:
            print(f"authz serve: the gRPC door's TLS files: {exc}", flush=True, file=sys.stderr)
            return 2
    options = replace(options, config=os.path.abspath(options.config))

    async def main() -> int:
        return await Supervisor(options, policy, digests).run()

    return asyncio.run(main())


def _cannot_listen(message: str) -> int:
    """``authz serve`` on a taken address: say which, and exit non-zero at once."""
    log.error("%s", message)
    print(f"authz serve: {message}", flush=True, file=sys.stderr)
    return EXIT_ADDRESS_IN_USE
