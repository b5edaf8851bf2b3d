"""The cached Check in-process: µs per call with and without telemetry, with
the policy's dynamic metadata and client headers configured (they are in the
prepared answer, so a hit should cost the same), allocations per call
(tracemalloc), and the HTTP door's cached call (the ASGI application with
the headers Envoy sends, on the door's uvloop loop), to show what the hot
path costs."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from google.protobuf import json_format  # noqa: E402

from authz.config import load_policy  # noqa: E402
from authz.engine import SystemClock  # noqa: E402
from authz.server.caller_identity import readers  # noqa: E402
from authz.server.http_door import HttpAuthzApp, new_event_loop  # noqa: E402
from authz.server.service import CheckService, PolicyState  # noqa: E402
from authz.server.telemetry import Telemetry  # noqa: E402
from authz.wire.grpc import GRPC, CheckRequest  # noqa: E402
from authz.wire.http import HttpDoor, HttpDoorSettings  # noqa: E402
from testkit.paths import ACCEPTANCE  # noqa: E402
from testkit.requests import check_request_json  # noqa: E402
from testkit.tokens import claims, token  # noqa: E402


class _NoHistogram:
    def record(self, value: float) -> None:
        pass


class _NoCounter(Counter):  # type: ignore[type-arg]
    def __setitem__(self, key: object, value: int) -> None:
        pass


class CallerContext:
    """What the bound gRPC door reads of a call's context (``callers:``):
    the peer certificate's SANs, and once per set of SANs its SPIFFE ID.
    Stands in for gRPC's context in-process; gRPC's own ``peer_identities()``
    measured 0.3 µs a call (and ``auth_context()`` 6 µs, read once)."""

    def __init__(self, spiffe_id: str) -> None:
        self._sans = [spiffe_id.encode(), b"localhost"]
        self._auth = {"peer_spiffe_id": [spiffe_id.encode()]}

    def peer_identities(self) -> list[bytes]:
        return self._sans

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def time_remaining(self) -> None:
        return None


def measure(services: list[CheckService], raw: bytes, iterations: int, rounds: int = 7,
            contexts: list[object] | None = None) -> list[float]:
    """Best µs per call of each service's sync Check (with its call context,
    None by default); rounds alternate between the services, so a machine
    that slows down slows all of them."""
    best = [float("inf")] * len(services)
    contexts = contexts or [None] * len(services)
    for service, context in zip(services, contexts, strict=True):
        service.check_sync(raw, context)
    for _ in range(rounds):
        for index, service in enumerate(services):
            check = service.check_sync
            context = contexts[index]
            started = time.perf_counter()
            for _ in range(iterations):
                check(raw, context)
            best[index] = min(best[index], (time.perf_counter() - started) / iterations * 1e6)
    return best


def measure_http(policy: object, bearer: str, iterations: int, rounds: int = 7) -> float:
    """Best µs per cached call of the HTTP door's ASGI application, with
    the request headers Envoy forwards for the benchmark's request."""
    door = HttpDoor(HttpDoorSettings(prefix="/authz", forwarded_hops=1))
    service = CheckService(PolicyState(policy, SystemClock(), doors=(GRPC, door)),
                           Telemetry())  # type: ignore[arg-type]
    app = HttpAuthzApp(lambda: service, door, 100)
    headers = [(b"host", b"127.0.0.1:10000"), (b"user-agent", b"wrk"), (b"authorization", f"Bearer {bearer}".encode()),
               (b"x-tenant", b"t1"), (b"x-forwarded-for", b"127.0.0.1"), (b"x-forwarded-proto", b"http"),
               (b"x-request-id", b"5f0c2b8e-9f2a-4c1e-8a7e-2d1f6b3c4a5e"),
               (b"x-envoy-expected-rq-timeout-ms", b"1000"), (b"content-length", b"0")]
    scope = {"type": "http", "method": "GET", "raw_path": b"/authz/api/orders/1", "query_string": b"",
             "headers": headers}
    statuses: list[int] = []

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])  # type: ignore[arg-type]

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    async def calls(count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            await app(scope, receive, send)
        return (time.perf_counter() - started) / count * 1e6

    loop = new_event_loop()
    try:
        loop.run_until_complete(calls(1))
        if statuses != [200]:
            raise SystemExit(f"the HTTP door's call was not allowed: {statuses}")
        best = min(loop.run_until_complete(calls(iterations)) for _ in range(rounds))
    finally:
        loop.close()
    if set(statuses) != {200} or service.state.decisions.stats.hits < iterations * rounds:
        raise SystemExit("the HTTP door's calls were not all allowed from the decision cache")
    return best


#: What the metadata variant adds to the acceptance policy's response.
METADATA = """\
  metadata:
    sub: identity.subject
    tier: identity.claims.tier
    roles: identity.roles
  client_headers:
    set-cookie: ['"session=" + identity.subject + "; Path=/; HttpOnly"', '"tier=" + identity.claims.tier']
"""


def with_metadata(policy: str, directory: str) -> str:
    """A copy of ``policy`` (and the files beside it) in ``directory``, with
    METADATA added to its response section."""
    source = Path(policy)
    copy = Path(shutil.copytree(source.parent, Path(directory) / "policy")) / source.name
    text = copy.read_text()
    text = text.replace("\nresponse:\n", "\nresponse:\n" + METADATA, 1) if "\nresponse:\n" in text \
        else text + "response:\n" + METADATA
    copy.write_text(text)
    return str(copy)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", default=str(ACCEPTANCE / "policy.yaml"))
    parser.add_argument("--iterations", type=int, default=200_000)
    args = parser.parse_args()
    policy = load_policy(args.policy)
    bearer = token(claims(tier="gold"))
    raw = json_format.ParseDict(check_request_json("GET", "/api/orders/1", headers={
        "authorization": f"Bearer {bearer}", "x-tenant": "t1"}), CheckRequest()).SerializeToString()

    with_telemetry = CheckService(PolicyState(policy, SystemClock()), Telemetry())
    without = CheckService(PolicyState(policy, SystemClock()), Telemetry())
    without.telemetry.door("grpc").latency = _NoHistogram()  # type: ignore[assignment]
    without.telemetry.decisions = _NoCounter()
    with tempfile.TemporaryDirectory() as directory:
        metadata = CheckService(PolicyState(load_policy(with_metadata(args.policy, directory)), SystemClock()),
                                Telemetry())
    a, b, c = measure([with_telemetry, without, metadata], raw, args.iterations // 7 or 1)
    # The same cached Check with callers bound (docs/security.md 60), measured
    # interleaved with the unbound one: asked by a gateway (destinations: any,
    # the destination not read) and by the destination's sidecar (self).
    gateway = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    sidecar = "spiffe://cluster.local/ns/shop/sa/orders"
    about = json_format.ParseDict(check_request_json("GET", "/api/orders/1", headers={
        "authorization": f"Bearer {bearer}", "x-tenant": "t1"}), CheckRequest())
    about.attributes.destination.principal = sidecar
    with tempfile.TemporaryDirectory() as directory:
        bound_path = Path(shutil.copytree(Path(args.policy).parent,
                                          Path(directory) / "policy")) / Path(args.policy).name
        text = bound_path.read_text()
        bound = []
        for entry in (f'["{gateway}"]\n    destinations: any',
                      '["spiffe://cluster.local/ns/*/sa/*"]\n    destinations: self'):
            bound_path.write_text(text + f"\ncallers:\n  - principals: {entry}\n")
            bound.append(CheckService(PolicyState(load_policy(str(bound_path)), SystemClock()), Telemetry(),
                                      caller_of=readers(client_ca=True, trust_caller_xfcc=False, http_door=False)))
    unbound = CheckService(PolicyState(policy, SystemClock()), Telemetry())
    u, v, w = measure([unbound, *bound], about.SerializeToString(), args.iterations // 7 or 1,
                      contexts=[None, CallerContext(gateway), CallerContext(sidecar)])
    def allowed(service: CheckService) -> int:
        return sum(n for labels, n in service.telemetry.decisions.items() if labels[:2] == ("allowed", "corp"))

    # measure() sends args.iterations // 7 per round, 7 rounds: at most args.iterations.
    if any(allowed(service) < (args.iterations // 7 or 1) * 7 for service in bound):
        raise SystemExit("the bound Checks were not all allowed")

    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    count = 1000
    for _ in range(count):
        with_telemetry.check_sync(raw, None)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    allocations = sum(stat.count_diff for stat in after.compare_to(before, "filename") if stat.count_diff > 0)
    http_us = measure_http(policy, bearer, args.iterations // 7 or 1)
    print(json.dumps({"with_telemetry_us": a, "without_telemetry_us": b, "telemetry_us": a - b,
                      "with_metadata_us": c, "metadata_vs_without_metadata_pct": (c - a) / a * 100,
                      "retained_allocations_per_hit": allocations / count, "http_door_hit_us": http_us,
                      "unbound_hit_us": u, "bound_gateway_hit_us": v, "bound_sidecar_hit_us": w,
                      "bound_gateway_vs_unbound_us": v - u, "bound_sidecar_vs_unbound_us": w - u}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
