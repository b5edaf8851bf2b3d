"""Outside calls per Check, in-process (the worker's ``check_sync``).

Three policies over the same roles, each with a local endpoint on
127.0.0.1 (``testkit/endpoint.py``, a threaded Python server) where it calls
one: a JWT issuer (the acceptance key file, no outside call), an
introspection issuer (opaque tokens), and the JWT issuer with a ``data:``
source read by the permission that allows. For each it times:

- a decision-cache hit (what most Checks are);
- the decision cache off (``cache.decisions.max_entries: 0``), every
  Check decided, its credential or data answer cached: the token cache for
  the JWT, the introspection answer cache, the data answer cache;
- a miss against the local endpoint: a new opaque token per Check (one
  introspection call each), a new tenant per Check (one data call each).

Run: ``python benchmarks/outside_bench.py [--quick]``. Prints a table;
asserts only that every Check is answered as expected.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import json_format

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authz.config import load_policy
from authz.engine import SystemClock
from authz.server.service import CheckService, PolicyState
from authz.server.telemetry import Telemetry
from authz.wire.grpc import CheckRequest, CheckResponse
from testkit.endpoint import Endpoint, Seen
from testkit.paths import ACCEPTANCE
from testkit.requests import check_request_json
from testkit.tokens import claims, token

ISSUERS = """\
issuers:
  - name: corp
    issuer: https://idp.example.com
    audiences: [orders-api]
    jwks_file: corp.jwks.json
    algorithms: [RS256]
    roles_claim: groups
  - name: partners
    issuer: https://as.example.com
    audiences: [orders-api]
    roles_claim: groups
    from: [{{header: x-partner-token}}]
    introspection:
      endpoint: {url}/introspect
      client_id: authz
      client_secret_file: introspection.secret
"""


def policy(url: str, *, data: bool, cached: bool) -> str:
    when = ", when: 'data.plans.tier == \"gold\"'" if data else ""
    source = f"""\
data:
  plans:
    url: {url}/tenants/{{identity.claims.tenant}}
    cache_ttl: 10m
    timeout: 2s
""" if data else ""
    return f"""\
version: 1
{ISSUERS.format(url=url)}{source}
roles:
  orders-reader:
    - {{methods: [GET], paths: ["/api/orders", "/api/orders/*"]{when}}}
cache:
  decisions: {{max_entries: {100000 if cached else 0}}}
"""


def answer(seen: Seen) -> tuple[int, Any]:
    if seen.path == "/introspect":
        return 200, {"active": True, "aud": "orders-api", "sub": "acme", "groups": ["orders-reader"],
                     "exp": int(time.time()) + 3600}
    return 200, {"tier": "gold"}


def raw(headers: dict[str, str]) -> bytes:
    message = json_format.ParseDict(check_request_json("GET", "/api/orders/1", headers=headers), CheckRequest())
    return message.SerializeToString()


def service_for(directory: Path, text: str) -> CheckService:
    (directory / "policy.yaml").write_text(text)
    return CheckService(PolicyState(load_policy(str(directory / "policy.yaml")), SystemClock()), Telemetry())


def best_us(checks: list[Callable[[], bytes]], iterations: int, rounds: int) -> list[float]:
    """Best µs per call of each check; rounds alternate between them, so a
    machine that slows down slows all of them."""
    best = [float("inf")] * len(checks)
    for check in checks:
        check()
    for _ in range(rounds):
        for index, check in enumerate(checks):
            started = time.perf_counter()
            for _ in range(iterations):
                check()
            best[index] = min(best[index], (time.perf_counter() - started) / iterations * 1e6)
    return best


def allowed(answer_bytes: bytes) -> bool:
    return CheckResponse.FromString(answer_bytes).status.code == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    iterations, rounds, misses = (300, 3, 50) if args.quick else (3000, 7, 300)
    directory = Path(tempfile.mkdtemp(prefix="authz-outside-bench-"))
    shutil.copy(ACCEPTANCE / "corp.jwks.json", directory / "corp.jwks.json")
    (directory / "introspection.secret").write_text("s3cret\n")
    jwt = raw({"authorization": f"Bearer {token(claims())}"})
    opaque = raw({"x-partner-token": "opaque-bench-token"})
    rows: list[tuple[str, float]] = []
    with Endpoint(answer) as endpoint:
        for cached, label in ((True, "decision-cache hit"), (False, "decision cache off, answer cached")):
            plain = service_for(directory, policy(endpoint.url, data=False, cached=cached))
            with_data = service_for(directory, policy(endpoint.url, data=True, cached=cached))
            cases = (("JWT", plain, jwt), ("introspection", plain, opaque), ("JWT + data lookup", with_data, jwt))
            for name, service, message in cases:
                assert allowed(service.check_sync(message, None)), name
            timed = best_us([lambda s=service, m=message: s.check_sync(m, None) for _, service, message in cases],
                            iterations, rounds)
            rows.extend((f"{label}: {name}", us) for (name, _, _), us in zip(cases, timed, strict=True))
        plain = service_for(directory, policy(endpoint.url, data=False, cached=False))
        with_data = service_for(directory, policy(endpoint.url, data=True, cached=False))
        fresh_tokens = [raw({"x-partner-token": f"opaque-{i}"}) for i in range(misses)]
        fresh_tenants = [raw({"authorization": f"Bearer {token(claims(tenant=f't-{i}'))}"}) for i in range(misses)]
        for name, service, messages in (("miss: introspection call (local endpoint)", plain, fresh_tokens),
                                        ("miss: data call (local endpoint)", with_data, fresh_tenants)):
            started = time.perf_counter()
            for message in messages:
                assert allowed(service.check_sync(message, None)), name
            rows.append((name, (time.perf_counter() - started) / len(messages) * 1e6))
    shutil.rmtree(directory, ignore_errors=True)
    base = {label: us for label, us in rows if label.endswith(": JWT")}
    print("| Check | µs per Check | vs the JWT Check of its row group |")
    print("|---|---:|---:|")
    for label, us in rows:
        group = label.split(":")[0]
        reference = base.get(f"{group}: JWT")
        ratio = f"{(us / reference - 1) * 100:+.0f} %" if reference else ""
        print(f"| {label} | {us:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
