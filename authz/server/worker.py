"""One worker process: a grpc.aio server answering Checks with its own
policy copy and caches, controlled by the supervisor over a pipe.

Control messages (dicts) and replies:
``{"op": "status"}`` -> readiness, policy generation, key-set states;
``{"op": "metrics"}`` -> ``{"ok": True, "metrics": snapshot}`` (see
:meth:`authz.server.telemetry.Telemetry.snapshot`);
``{"op": "reload", "target": {...}}`` -> load the supervisor's generation
(:class:`authz.server.generation.Target`); ``{"ok": bool, "error": str}``.
A worker that cannot load its target is not ready (and, once serving, keeps
answering with the generation it has) until a later ask succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from concurrent import futures
from multiprocessing.connection import Connection
from typing import Any

from authz.config import KeyRegistry
from authz.engine import SystemClock
from authz.errors import ConfigError
from authz.identity.jwks import RemoteKeys
from authz.outside.calls import trace_calls
from authz.policy import Policy
from authz.server.binding import EXIT_ADDRESS_IN_USE
from authz.server.caller_identity import TlsFiles, readers
from authz.server.cpus import cgroup_cpu_limit, pinned_cpu
from authz.server.decision_log import DecisionLog, configure_stream
from authz.server.generation import NotThisGeneration, Target, load_target
from authz.server.log_export import logger_from_environment
from authz.server.options import ServeOptions
from authz.server.service import CheckService, PolicyState
from authz.server.telemetry import Telemetry
from authz.server.tracing import tracer_from_environment
from authz.wire import Door
from authz.wire.grpc import AUTHORIZATION_SERVICE
from authz.wire.http import HttpDoor

#: Seconds a starting worker waits for its remote key sets' first fetch
#: before it listens and reports SERVING.
FIRST_FETCH_WAIT = 5.0

log = logging.getLogger("authz.worker")


class Worker:
    def __init__(self, options: ServeOptions, index: int, control: Connection, target: Target) -> None:
        self.options = options
        self.index = index
        #: The supervisor's generation, which this worker must run to be ready.
        self.target = target
        self.stale = False
        self.port = options.worker_port(index)  # besides the shared grpc_address
        self.control = control
        # Every remote key set is made by this registry, which gives it this
        # worker's listener when it is made (docs/security.md 52).
        self.registry = KeyRegistry(on_change=self._keys_changed)
        self.clock = SystemClock()
        self.telemetry = Telemetry(sources=self._telemetry_sources, worker=index)
        self.service: CheckService | None = None
        self.server: Any = None
        self.health: Any = None
        self.ready = False
        self.last_reload_error: str | None = None
        self.http_door = HttpDoor(options.http_door()) if options.http_authz_address else None
        self.grpc_door = options.grpc_door()
        self.doors: tuple[Door, ...] = (self.grpc_door,) if self.http_door is None else (self.grpc_door, self.http_door)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._loaded: asyncio.Event | None = None

    # -- policy ---------------------------------------------------------------

    def _activate(self, policy: Policy) -> None:
        state = PolicyState(policy, self.clock, dry_run=self.options.dry_run, doors=self.doors)
        remote = [issuer.keys for issuer in policy.issuers if isinstance(issuer.keys, RemoteKeys)]
        for keys in remote:
            keys.start()
        if self.service is None:
            decision_log = None
            if self.options.decision_log != "none":
                configure_stream()
                decision_log = DecisionLog(self.options.decision_log, self.options.decision_log_sample,
                                           worker=self.index, otel=logger_from_environment())
            tracer = tracer_from_environment()
            trace_calls(tracer)  # each introspection or data call a span of its own
            caller_of = readers(client_ca=self.options.grpc_client_ca is not None,
                                trust_caller_xfcc=self.options.trust_caller_xfcc, http_door=self.http_door is not None)
            self.service = CheckService(state, self.telemetry, decision_log=decision_log,
                                        tracer=tracer, max_waiting=self.options.threads // 2,
                                        caller_of=caller_of, grpc_door=self.grpc_door)
        else:
            # In-flight checks keep the old state, but its caches are closed
            # first: key changes reach only the state in force.
            old = self.service.state
            old.retire()
            self.service.state = state
            for calls in old.policy.outside_calls:  # the connections of endpoints the new one dropped
                if not any(calls is kept for kept in policy.outside_calls):
                    calls.close()
        self.registry.retain(remote)
        self.telemetry.generation = policy.generation

    def _keys_changed(self, issuer: str, removed: frozenset[str]) -> None:
        # Runs on the key-fetch thread, after the new set is in place: bump
        # the caches' epochs and raise their flags, nothing more.
        if self.service is not None:
            self.service.state.invalidate()

    async def _first_fetches(self, policy: Policy) -> None:
        """Wait, at most :data:`FIRST_FETCH_WAIT` seconds, for the first fetch
        of every remote key set before serving: a worker that comes back
        after a crash would otherwise answer its first checks with
        ``jwks_unavailable`` while the others, holding the keys, could have
        answered them (Envoy's retries and health checks send calls to it as
        soon as it listens and reports SERVING). An issuer that does not
        answer in time delays nobody further: its checks wait for keys then."""
        pending = [keys.fetch_now() for issuer in policy.issuers
                   if isinstance(keys := issuer.keys, RemoteKeys) and keys.current() is None]
        if not pending:
            return
        _done, late = await asyncio.wait([asyncio.wrap_future(f) for f in pending], timeout=FIRST_FETCH_WAIT)
        if late:
            log.warning("worker %d: %d key set(s) not fetched within %ss; serving, their checks wait for keys",
                        self.index, len(late), FIRST_FETCH_WAIT)

    async def _reload(self, target: dict[str, Any] | None = None) -> dict[str, Any]:
        """Load the target generation (the one given, else the last one)."""
        if target is not None:
            self.target = Target.from_message(target)
        wanted = self.target
        if self.service is not None and not self.stale and self.service.state.policy.generation == wanted.generation:
            return {"ok": True, "generation": wanted.generation}
        loop = asyncio.get_running_loop()
        try:
            policy = await loop.run_in_executor(None, load_target, self.options.config, wanted, self.registry)
            self.options.check_binding(policy)
        except (ConfigError, NotThisGeneration) as exc:
            if str(exc) != self.last_reload_error:  # said once, not at every ask
                log.error("worker %d cannot load policy generation %d (not ready until it can):\n%s",
                          self.index, wanted.generation, exc)
            if wanted.generation == self.target.generation:
                self.stale = True
                self.last_reload_error = str(exc)
                await self._publish_health()
            return {"ok": False, "error": str(exc)}
        if wanted.generation != self.target.generation:  # a newer target arrived meanwhile
            return {"ok": False, "error": f"generation {wanted.generation} was replaced while it loaded"}
        self._activate(policy)
        self.stale = False
        self.last_reload_error = None
        await self._publish_health()
        if self._loaded is not None:
            self._loaded.set()
        return {"ok": True, "generation": policy.generation}

    async def _publish_health(self) -> None:
        """gRPC health follows readiness once the server runs."""
        if self.health is None or not self.ready:
            return
        from grpc_health.v1 import health_pb2

        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING if self.stale
                               else health_pb2.HealthCheckResponse.SERVING)

    def _telemetry_sources(self) -> dict[str, Any]:
        service = self.service
        if service is None:
            return {}
        return {
            "caches": service.state.cache_sources(),
            "jwks": {issuer.name: issuer.keys.status() for issuer in service.state.policy.issuers},
            "outside": {calls.name: calls for calls in service.state.policy.outside_calls},
        }

    def status(self) -> dict[str, Any]:
        service = self.service
        issuers = {}
        generation = None
        if service is not None:
            generation = service.state.policy.generation
            issuers = {issuer.name: issuer.keys.status() for issuer in service.state.policy.issuers}
        return {
            "index": self.index,
            "pid": os.getpid(),
            "ready": self.ready and not self.stale,
            "generation": generation,
            "target": self.target.generation,
            "decisions": sum(self.telemetry.decisions.values()),
            "issuers": issuers,
            "last_reload_error": self.last_reload_error,
        }

    # -- control pipe ---------------------------------------------------------

    async def _handle(self, message: dict[str, Any]) -> Any:
        op = message.get("op")
        if op == "status":
            return self.status()
        if op == "metrics":
            return {"ok": True, "metrics": self.telemetry.snapshot()}
        if op == "reload":
            return await self._reload(message.get("target"))
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _control_thread(self) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            try:
                message = self.control.recv()
            except (EOFError, OSError):
                # The supervisor is gone: stop as if told to.
                loop.call_soon_threadsafe(self._request_stop)
                return
            future = asyncio.run_coroutine_threadsafe(self._handle(message), loop)
            try:
                reply = future.result()
            except Exception as exc:
                reply = {"ok": False, "error": f"{exc.__class__.__name__}: {exc}"}
            try:
                self.control.send(reply)
            except (OSError, ValueError):
                return

    def _request_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    # -- the gRPC server --------------------------------------------------------

    async def _set_health(self, status: Any) -> None:
        for name in ("", AUTHORIZATION_SERVICE):
            result = self.health.set(name, status)
            if asyncio.iscoroutine(result):
                await result

    async def run(self) -> int:
        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection

        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._loaded = asyncio.Event()
        # Answer the supervisor (status: not ready yet) and SIGTERM from here on.
        self._loop.add_signal_handler(signal.SIGTERM, self._request_stop)
        threading.Thread(target=self._control_thread, name="authz-control", daemon=True).start()
        if not (await self._reload())["ok"]:
            # Not ready, not listening: the supervisor asks again (or stops us).
            waits = [asyncio.ensure_future(self._loaded.wait()), asyncio.ensure_future(self._stopping.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
            if self.service is None:
                return 0
        assert self.service is not None
        service = self.service
        policy = service.state.policy
        await self._first_fetches(policy)

        options: list[tuple[str, Any]] = [
            ("grpc.so_reuseport", 1),
            # Connections are spread over workers by the kernel when they are
            # opened; ageing them out makes a client that holds only a few
            # (Envoy: one per worker thread) re-spread them regularly.
            ("grpc.max_connection_age_ms", int(self.options.max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(self.options.drain_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ]
        if self.options.max_streams_per_connection is not None:
            options.append(("grpc.max_concurrent_streams", self.options.max_streams_per_connection))
        sync = self.options.server == "sync"
        if sync:
            # Checks run on a small thread pool; the gRPC core does the I/O in
            # its own threads. Measured faster than grpc.aio for this workload
            # (benchmarks/RESULTS.md), through Envoy and directly.
            server = grpc.server(
                futures.ThreadPoolExecutor(self.options.threads, thread_name_prefix="authz-check"),
                options=options, maximum_concurrent_rpcs=self.options.max_concurrent_checks)
            self.health = health.HealthServicer()
            check = service.check_sync
        else:
            server = grpc.aio.server(options=options, maximum_concurrent_rpcs=self.options.max_concurrent_checks)
            self.health = health.aio.HealthServicer()
            check = service.check  # type: ignore[assignment]
        handler = grpc.method_handlers_generic_handler(AUTHORIZATION_SERVICE, {
            # Raw bytes in and out: the servicer parses (so undecodable input
            # is a clean deny) and may answer with prepared bytes.
            "Check": grpc.unary_unary_rpc_method_handler(check),
        })
        server.add_generic_rpc_handlers([handler])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [AUTHORIZATION_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME],
            server,
        )
        listen = [self.options.grpc_address]
        if self.port is not None:
            listen.append(f"{self.options.grpc_address.rsplit(':', 1)[0]}:{self.port}")
        files = None
        if self.options.grpc_tls_cert is not None and self.options.grpc_tls_key is not None:
            files = TlsFiles(self.options.grpc_tls_cert, self.options.grpc_tls_key, self.options.grpc_client_ca)
        for address in listen:
            try:
                # Credentials per port: each checks the files at its new handshakes.
                bound = (server.add_insecure_port(address) if files is None
                         else server.add_secure_port(address, files.credentials()))
            except RuntimeError:
                bound = 0
            if not bound:
                log.error("worker %d: cannot listen on %s: address in use", self.index, address)
                return EXIT_ADDRESS_IN_USE
        if sync:
            server.start()
        else:
            await server.start()
        self.server = server
        http_door = None
        if self.http_door is not None and self.options.http_authz_address:
            from authz.server.http_door import HttpAuthzApp, HttpDoorServer

            app = HttpAuthzApp(lambda: self.service, self.http_door, self.options.max_concurrent_checks)
            http_door = HttpDoorServer(app, self.options.http_authz_address)
            http_door.start()
        self.ready = True
        await self._publish_health()
        log.info("worker %d (pid %d) serving gRPC (%s) on %s%s, policy generation %d", self.index, os.getpid(),
                 self.options.server, self.options.grpc_address,
                 f" and port {self.port}" if self.port else "", policy.generation)

        await self._stopping.wait()
        # Drain: report NOT_SERVING, stop accepting, let in-flight checks finish.
        self.ready = False
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if http_door is not None:
            await self._loop.run_in_executor(None, http_door.stop, self.options.drain_timeout)
        if sync:
            stopped = server.stop(self.options.drain_timeout)
            await self._loop.run_in_executor(None, stopped.wait)
        else:
            await server.stop(self.options.drain_timeout)
        for issuer in self.service.state.policy.issuers:
            issuer.keys.stop()
        for calls in self.service.state.policy.outside_calls:
            calls.close()
        log.info("worker %d stopped", self.index)
        return 0


def worker_main(options: ServeOptions, index: int, control: Connection, target: dict[str, Any]) -> None:
    """Entry point of worker process ``index`` (forked from the supervisor's preloaded fork server),
    which must run the supervisor's generation ``target``."""
    options.configure_logging()
    cpu = pinned_cpu(options.pin_workers, index, options.workers, limit=cgroup_cpu_limit())
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
        log.info("worker %d pinned to CPU %d", index, cpu)
    # Ctrl-C reaches the whole process group; the supervisor coordinates the stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker = Worker(options, index, control, Target.from_message(target))
    try:
        # A requirement everywhere but Windows, where uvloop does not exist.
        import uvloop
    except ImportError:
        code = asyncio.run(worker.run())
    else:
        code = uvloop.run(worker.run())
    logging.shutdown()
    os._exit(code)
