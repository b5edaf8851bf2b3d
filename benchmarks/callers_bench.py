"""The cached path with callers bound, through Envoy: what binding costs.

h2load cannot present a client certificate, so the bound door is measured
the way it is used: wrk -> an edge Envoy (route answering 200 itself) ->
authz, on the same request and token as ``bench.py``'s through-Envoy rows,
every answer a decision-cache hit. Three setups, their runs interleaved in
one process (each round in a rotated order) so a noisy neighbour hits them
alike:

- ``plain``: authz's gRPC door without TLS, no ``callers:`` (as today);
- ``tls``: the gRPC door over TLS (``--grpc-tls-cert/--grpc-tls-key``), no
  client certificate, no ``callers:``: what TLS alone costs;
- ``bound``: TLS with ``--grpc-client-ca``, Envoy presenting the gateway's
  certificate (``authz envoy-config --authz-tls-cert ...``), and the policy's
  ``callers:`` admitting it: every Check is checked against ``callers:``
  before the cache lookup.

    .venv/bin/python benchmarks/callers_bench.py [--runs 5] [--duration 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from authz.tools.envoy_config import EnvoyOptions, render  # noqa: E402
from benchmarks.bench import Bench, EnvoyProc, decided, metrics  # noqa: E402
from testkit.pki import MeshCA  # noqa: E402
from testkit.procs import Authz, free_port  # noqa: E402

GATEWAY = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
AUTHZ = "spiffe://cluster.local/ns/authz/sa/authz"
CALLERS = f"""
callers:
  - principals: ["{GATEWAY}"]
    destinations: any
  - principals: ["spiffe://cluster.local/ns/*/sa/*"]
    destinations: self
"""
SETUPS = ("plain", "tls", "bound")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5, help="runs of each setup (default %(default)s)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    bench = Bench(argparse.Namespace(duration=args.duration, runs=args.runs, workers=args.workers))
    tmp = Path(tempfile.mkdtemp(prefix="authz-callers-bench-"))
    ca = MeshCA(tmp)
    authz_cert, authz_key = ca.workload(AUTHZ, "authz")
    gateway_cert, gateway_key = ca.workload(GATEWAY, "gateway")
    bound_policy = bench.policy.parent / "policy-bound.yaml"
    bound_policy.write_text(bench.policy.read_text() + CALLERS)
    tls_flags = ["--grpc-tls-cert", str(authz_cert), "--grpc-tls-key", str(authz_key)]

    def start(setup: str) -> Callable[[], tuple[EnvoyProc, int, Callable[[], dict[str, Any]]]]:
        def go() -> tuple[EnvoyProc, int, Callable[[], dict[str, Any]]]:
            extra = [] if setup == "plain" else (
                tls_flags + (["--grpc-client-ca", str(ca.cert_path)] if setup == "bound" else []))
            server = Authz(bound_policy if setup == "bound" else bench.policy, workers=args.workers,
                           worker_ports=True, extra=extra).__enter__()
            before = metrics(server.http)
            listen, admin = free_port(), free_port()
            options = EnvoyOptions(shape="edge", authz=server.worker_addresses, listen=f"127.0.0.1:{listen}",
                                   admin=f"127.0.0.1:{admin}", direct_response=True, timeout=1.0)
            if setup != "plain":
                options.authz_tls_cert, options.authz_tls_key = str(gateway_cert), str(gateway_key)
                options.authz_ca, options.authz_san = str(ca.cert_path), AUTHZ
            envoy = EnvoyProc(render(options), tmp, setup)
            envoy.wait(admin)

            def finish() -> dict[str, Any]:
                after = metrics(server.http)
                server.__exit__(None, None, None)
                return {"allowed": decided(after, "allowed") - decided(before, "allowed"),
                        "all": decided(after) - decided(before),
                        "hits": after.get('authz_cache_requests_total{cache="decisions",outcome="hit"}', 0)
                        - before.get('authz_cache_requests_total{cache="decisions",outcome="hit"}', 0)}
            return envoy, listen, finish
        return go

    def verify(result: dict[str, Any], stats: dict[str, int], server: dict[str, Any]) -> None:
        ok = stats.get("http.ingress_http.ext_authz.ok", 0)
        assert ok >= result["requests"] * 0.99, ("ext_authz did not approve the requests", ok, result)
        assert stats.get("http.ingress_http.ext_authz.error", 0) == 0
        assert server["all"] == server["allowed"] >= ok * 0.99, ("authz did not allow what Envoy got", server, ok)
        assert server["hits"] >= server["all"] * 0.99, ("not the cached path", server)

    runs: dict[str, list[dict[str, Any]]] = {setup: [] for setup in SETUPS}
    for index in range(args.runs):
        order = SETUPS[index % 3:] + SETUPS[:index % 3]
        for setup in order:
            result = bench.envoy_once(start(setup), verify)
            runs[setup].append(result)
            print(json.dumps({"round": index, "setup": setup, "rps": result["rps"], "p50_ms": result["p50"],
                              "p99_ms": result["p99"], "server_cpu_us": round(result["server_cpu_us"], 1),
                              "envoy_cpu_us": round(result["envoy_cpu_us"], 1)}), flush=True)

    print("\n| setup | req/s (median) | req/s (min-max) | p50 ms | p99 ms | authz CPU µs/request | Envoy CPU "
          "µs/request |")
    print("|---|---|---|---|---|---|---|")
    for setup in SETUPS:
        rows = runs[setup]
        rps = [r["rps"] for r in rows]
        print(f"| {setup} | {statistics.median(rps):,.0f} | {min(rps):,.0f}-{max(rps):,.0f} "
              f"| {statistics.median(r['p50'] for r in rows):.2f} | {statistics.median(r['p99'] for r in rows):.2f} "
              f"| {statistics.median(r['server_cpu_us'] for r in rows):.0f} "
              f"| {statistics.median(r['envoy_cpu_us'] for r in rows):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
