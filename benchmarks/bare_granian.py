"""A bare HTTP ext_authz server: granian answering every call 200 with
``x-user-id: alice``, deciding nothing. The transport ceiling of authz's HTTP
door (``authz serve --http-authz-address``): what Envoy's ``http_service``
call costs when the server does no work at all.

    python benchmarks/bare_granian.py --workers 2 --port 9400 [--server embed|cli] [--pin]

``--server embed`` (the default) is the layout of authz's HTTP door: N worker
processes, each running granian embedded (``granian.server.embed.Server``,
ASGI without lifespan, the same options as ``authz.server.http_door``) on a
thread of its own with the door's event loop (uvloop), all on one
SO_REUSEPORT port. ``--server cli`` runs the
granian CLI instead: ``granian --interface asgi --loop uvloop --workers N`` (on Linux each
granian worker binds the port with SO_REUSEPORT as well).

On SIGTERM every worker prints ``worker I answered N`` (the server-side
count the benchmark trusts) and exits (with ``--server cli``, ``worker PID
answered N``); ``ready: N workers listening`` comes once the kernel lists
every worker's socket on the port.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HEADERS = [(b"x-user-id", b"alice"), (b"content-length", b"0")]
_count = 0


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI application: 200 and ``x-user-id: alice`` for every call."""
    global _count
    if scope["type"] == "http":
        _count += 1
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": b""})
    elif scope["type"] == "lifespan":  # the granian CLI (--interface asgi): report the count on shutdown
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                print(f"worker {os.getpid()} answered {_count}", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return


def listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1:``port`` (with SO_REUSEPORT, one
    per worker): the kernel's own table, so a worker whose socket is not
    bound yet is not counted."""
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def wait_listening(port: int, count: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while listeners(port) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def embedded_worker(index: int, args: argparse.Namespace) -> None:
    """One worker process, as authz's: granian embedded on its own thread and event loop."""
    import asyncio

    from granian.constants import HTTPModes, Interfaces
    from granian.server.embed import Server

    from authz.server.http_door import new_event_loop

    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[index % len(cpus)]})
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server = Server(app, address="127.0.0.1", port=args.port, interface=Interfaces.ASGINL, http=HTTPModes.auto,
                    websockets=False, log_enabled=False, backlog=1024)
    loop = new_event_loop()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.serve())

    def report(*_: object) -> None:
        print(f"worker {index} answered {_count}", flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, report)
    threading.Thread(target=run, name="bare-granian", daemon=True).start()
    while True:
        signal.pause()


def announce(args: argparse.Namespace) -> None:
    if wait_listening(args.port, args.workers):
        print(f"ready: {args.workers} workers listening on 127.0.0.1:{args.port}", flush=True)
    else:
        print(f"not ready: {listeners(args.port)} of {args.workers} workers listening", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=9400)
    parser.add_argument("--server", choices=["embed", "cli"], default="embed")
    parser.add_argument("--pin", action="store_true", help="pin worker i to CPU i")
    args = parser.parse_args()
    if args.server == "cli":
        root = Path(__file__).resolve().parents[1]
        granian = Path(sys.executable).parent / "granian"
        command = [str(granian) if granian.exists() else "granian", "--interface", "asgi", "--workers",
                   str(args.workers),
                   "--host", "127.0.0.1", "--port", str(args.port), "--no-ws", "--backlog", "1024",
                   "--log-level", "warning", "--loop", "uvloop",
                   "benchmarks.bare_granian:app"]
        if args.pin:
            parser.error("--pin: the granian CLI spawns its own workers; pinning is for --server embed")
        child = subprocess.Popen(command, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        signal.signal(signal.SIGINT, lambda *_: child.send_signal(signal.SIGTERM))
        announce(args)
        return child.wait()
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=embedded_worker, args=(i, args)) for i in range(args.workers)]
    for process in processes:
        process.start()
    announce(args)

    def stop(*_: object) -> None:
        for process in processes:
            if process.pid:
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for process in processes:
        process.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
