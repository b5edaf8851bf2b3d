"""Request bodies in-process: µs per Check for a rule over a 1 KiB and a 64 KiB
JSON body (``request.body_json``), as the gRPC server runs it (``check_sync``,
serialized CheckRequest in with the body in ``raw_body``, as Envoy sends it
with ``pack_as_bytes``), and ``Engine.decide`` alone:

- miss: decision cache off, so every Check parses the CheckRequest, reads
  and parses the body, checks its shape and evaluates the rule;
- hit: decision cache on and the same request again: the key digests the
  body (SHA-256), nothing is parsed;
- no body rule: the same requests against the same policy without the
  body rule (a header rule instead), for comparison.

Run: ``python benchmarks/body_bench.py [--iterations N]``. Prints a table;
asserts nothing about time (it checks every decision is the one expected).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from google.protobuf import json_format

from authz.config import load_policy
from authz.engine import Engine, SystemClock
from authz.server.service import CheckService, PolicyState
from authz.server.telemetry import Telemetry
from authz.wire.grpc import CheckRequest, CheckResponse, to_request
from testkit.requests import check_request_json

POLICY = """\
version: 1
body: {{max_bytes: 128KiB, max_elements: 100000}}
cache:
  decisions: {{max_entries: {entries}}}
rules:
  - {{name: orders, effect: allow, anonymous: true, methods: [POST], paths: [/api/orders], when: '{when}'}}
"""
BODY_RULE = "request.body_json.order.amount < 1000 && request.body_json.order.currency == \"EUR\""
HEADER_RULE = 'request.headers["x-tenant"] == "t1"'


def _body(size: int) -> bytes:
    """A JSON order of about ``size`` bytes: a few fields and a list of line items."""
    items = []
    document = {"order": {"amount": 250, "currency": "EUR", "customer": "c-1234"}, "items": items}
    while len(json.dumps(document)) < size:
        items.append({"sku": f"sku-{len(items):05d}", "quantity": 1, "price": 9.5, "note": "gift wrap"})
    return json.dumps(document).encode()


def _policy(tmp: Path, when: str, entries: int) -> CheckService:
    path = tmp / f"policy-{abs(hash((when, entries)))}.yaml"
    path.write_text(POLICY.format(when=when.replace("'", "''"), entries=entries))
    return CheckService(PolicyState(load_policy(str(path)), SystemClock()), Telemetry())


def _time(call: Callable[[], object], iterations: int) -> float:
    for _ in range(min(200, iterations)):
        call()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(iterations):
            call()
        best = min(best, (time.perf_counter() - started) / iterations)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        for size in (1024, 64 * 1024):
            body = _body(size)
            message = check_request_json("POST", "/api/orders", body=body,
                                         headers={"content-type": "application/json", "x-tenant": "t1",
                                                  "x-envoy-auth-partial-body": "false"})
            raw = json_format.Parse(json.dumps(message), CheckRequest()).SerializeToString()
            for label, when in (("body rule", BODY_RULE), ("no body rule", HEADER_RULE)):
                miss, hit = _policy(tmp, when, 0), _policy(tmp, when, 1000)
                answer = CheckResponse.FromString(miss.check_sync(raw, None))
                assert answer.status.code == 0, answer
                engine = Engine(miss.state.policy)
                request = to_request(CheckRequest.FromString(raw))
                assert engine.decide(request).allowed
                iterations = args.iterations if size <= 1024 else max(20, args.iterations // 10)
                rows.append((f"{len(body) // 1024} KiB, {label}",
                             _time(lambda m=miss, b=raw: m.check_sync(b, None), iterations),
                             _time(lambda h=hit, b=raw: h.check_sync(b, None), iterations),
                             _time(lambda e=engine, r=request: e.decide(r), iterations)))
    print("| request | Check, miss (µs) | Check, hit (µs) | Engine.decide (µs) |")
    print("|---|---:|---:|---:|")
    for name, miss_us, hit_us, decide_us in rows:
        print(f"| {name} | {miss_us:.1f} | {hit_us:.1f} | {decide_us:.1f} |")


if __name__ == "__main__":
    main()
