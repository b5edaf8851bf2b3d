"""How the worker layout performs: the question behind `authz serve`'s defaults.

    .venv/bin/python benchmarks/workers_bench.py [--duration 5] [--workers 2]

The bare always-OK server (``bare_server.py``) and authz (cache hit), each as
grpc.aio on uvloop and as the sync thread-pool server; directly with h2load
(many connections: the kernel spreads them over a shared SO_REUSEPORT port),
pinned and unpinned; and through Envoy with wrk, Envoy's cluster pointing at
the shared port (Envoy's gRPC client holds about one connection per Envoy
worker thread, so the spread is luck) or at each worker's own port (Envoy
balances requests). Counts are the servers' own.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench import (  # noqa: E402
    Bare,
    check_body,
    decided,
    envoy_for_authz,
    grpc_frame_file,
    h2load,
    metrics,
    write_policy,
    wrk,
)
from testkit.procs import Authz  # noqa: E402
from testkit.tokens import claims, token  # noqa: E402


def allowed_since(authz: Authz, before: dict[str, float]) -> float:
    """Checks authz decided since ``before``; all of them must be allows
    (a throughput of denials or errors would measure the wrong path)."""
    after = metrics(authz.http)
    every, allowed = decided(after) - decided(before), decided(after, "allowed") - decided(before, "allowed")
    if every != allowed or not allowed:
        raise SystemExit(f"authz decided {every:.0f} Checks but allowed {allowed:.0f}: not the cached-allow path")
    return allowed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="authz-workers-"))
    policy, _ = write_policy(tmp)
    bearer = token(claims(iat=int(time.time()), exp=int(time.time()) + 86400))
    headers = {"authorization": f"Bearer {bearer}", "x-tenant": "t1"}
    body = grpc_frame_file(tmp / "hit.grpc", check_body(bearer))
    d, w = args.duration, args.workers
    rows: list[tuple[str, str, float]] = []

    def row(kind: str, name: str, value: float) -> None:
        rows.append((kind, name, value))
        print(f"{kind:8} {name:55} {value:8.0f}/s", flush=True)

    for mode in ("sync", "uvloop"):
        for pin in (False, True):
            bare = Bare(w, mode=mode, pin=pin)
            h2load(bare.endpoints[0], body, d)
            row("direct", f"bare {mode}, shared port, {'pinned' if pin else 'unpinned'}", bare.stop() / d)
    for server in ("sync", "aio"):
        with Authz(policy, workers=w, extra=["--server", server]) as authz:
            before = metrics(authz.http)
            h2load(authz.grpc_address, body, d)
            row("direct", f"authz {server}, shared port", allowed_since(authz, before) / d)
    for mode in ("sync", "uvloop"):
        for ports in (False, True):
            bare = Bare(w, mode=mode, worker_ports=ports)
            envoy, listen = envoy_for_authz(bare.endpoints, tmp, "bare")
            wrk(f"http://127.0.0.1:{listen}/api/orders/1", d, headers)
            envoy.stop()
            row("envoy", f"bare {mode}, {'per-worker ports' if ports else 'shared port'}", bare.stop() / d)
    for server in ("sync", "aio"):
        for ports in (False, True):
            with Authz(policy, workers=w, worker_ports=ports, extra=["--server", server]) as authz:
                endpoints = authz.worker_addresses if ports else [authz.grpc_address]
                before = metrics(authz.http)
                envoy, listen = envoy_for_authz(endpoints, tmp, "authz")
                wrk(f"http://127.0.0.1:{listen}/api/orders/1", d, headers)
                envoy.stop()
                row("envoy", f"authz {server}, {'per-worker ports' if ports else 'shared port'}",
                    allowed_since(authz, before) / d)
    print("\n| path | layout | checks/s |\n|---|---|---:|")
    for kind, name, value in rows:
        print(f"| {kind} | {name} | {value:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
