"""A bare Python ext_authz server that answers OK without deciding: the
baseline authz is compared with. Same process layout as ``authz serve``
(N worker processes on a shared SO_REUSEPORT port, optionally one extra port
each), with a choice of gRPC server flavour, so the comparison is like for
like.

    python benchmarks/bare_server.py --workers 2 --port 9300 [--worker-ports 9310] \
        [--mode uvloop|aio|sync] [--pin]

On SIGTERM every worker prints ``answered N`` (the server-side count the
benchmark trusts) and exits. Like authz, it reports SERVING on the gRPC
health service, which the generated Envoy configs check.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import sys
from concurrent import futures

import grpc
from google.rpc import status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from authz._proto.envoy.service.auth.v3 import external_auth_pb2

SERVICE = "envoy.service.auth.v3.Authorization"
OK = external_auth_pb2.CheckResponse(
    status=status_pb2.Status(code=0), ok_response=external_auth_pb2.OkHttpResponse()
).SerializeToString()


def worker(index: int, args: argparse.Namespace) -> None:
    if args.pin:
        os.sched_setaffinity(0, {index % os.cpu_count()})  # type: ignore[operator]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    count = 0

    def report(*_: object) -> None:
        print(f"worker {index} answered {count}", flush=True)
        os._exit(0)

    addresses = [f"127.0.0.1:{args.port}"]
    if args.worker_ports:
        addresses.append(f"127.0.0.1:{args.worker_ports + index}")
    options = [("grpc.so_reuseport", 1)]

    if args.mode == "sync":
        def check_sync(raw: bytes, context: object) -> bytes:
            nonlocal count
            external_auth_pb2.CheckRequest.FromString(raw)
            count += 1
            return OK

        server = grpc.server(futures.ThreadPoolExecutor(args.threads), options=options)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            SERVICE, {"Check": grpc.unary_unary_rpc_method_handler(check_sync)})])
        servicer = health.HealthServicer()
        servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        for address in addresses:
            server.add_insecure_port(address)
        server.start()
        signal.signal(signal.SIGTERM, report)
        print(f"worker {index} ready", flush=True)
        server.wait_for_termination()
        return

    async def check(raw: bytes, context: object) -> bytes:
        nonlocal count
        external_auth_pb2.CheckRequest.FromString(raw)
        count += 1
        return OK

    async def main() -> None:
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            SERVICE, {"Check": grpc.unary_unary_rpc_method_handler(check)})])
        servicer = health.aio.HealthServicer()
        await servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        for address in addresses:
            server.add_insecure_port(address)
        await server.start()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, report)
        print(f"worker {index} ready", flush=True)
        await server.wait_for_termination()

    if args.mode == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=9300)
    parser.add_argument("--worker-ports", type=int, default=None)
    parser.add_argument("--mode", choices=["uvloop", "aio", "sync"], default="uvloop")
    parser.add_argument("--threads", type=int, default=16, help="sync mode: thread pool size")
    parser.add_argument("--pin", action="store_true", help="pin worker i to CPU i")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=worker, args=(i, args)) for i in range(args.workers)]
    for process in processes:
        process.start()

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
