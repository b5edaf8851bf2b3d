"""RSS of one worker's decision path after N unique tokens.

Runs the worker's own ``CheckService`` (the code a worker runs per Check,
caches at their configured bounds) in this process and feeds it N requests,
each with a token never seen before, then reports the process's RSS. The
tokens are HS256 (a local shared-secret issuer added to the policy), only so
that minting a million of them takes seconds, not an hour: what the caches
hold per token (a digest key, the identity, the prepared response) does not
depend on the signature algorithm.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from authz.config import load_policy  # noqa: E402
from authz.engine import SystemClock  # noqa: E402
from authz.server.service import CheckService, PolicyState  # noqa: E402
from authz.server.telemetry import Telemetry  # noqa: E402
from authz.wire.grpc import CheckRequest  # noqa: E402

SECRET = b"memory-probe-secret-0123456789abcdef"


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--policy", required=True)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="authz-memory-"))
    source = Path(args.policy)
    for item in source.parent.iterdir():
        if item.is_file():
            shutil.copy(item, directory / item.name)
    (directory / "probe.jwks.json").write_text(json.dumps({"keys": [{"kty": "oct", "kid": "probe", "alg": "HS256",
                                                                     "k": b64(SECRET)}]}))
    text = source.read_text().replace(
        "api_keys:",
        "  - name: probe\n    issuer: https://probe.example.com\n    audiences: [orders-api]\n"
        "    jwks_file: probe.jwks.json\n    algorithms: [HS256]\n    roles_claim: groups\n\napi_keys:", 1)
    (directory / "policy.yaml").write_text(text)
    service = CheckService(PolicyState(load_policy(str(directory / "policy.yaml")), SystemClock()), Telemetry())
    loop = asyncio.new_event_loop()
    start = rss_mb()
    header = b64(json.dumps({"alg": "HS256", "kid": "probe", "typ": "JWT"}).encode())
    now = int(time.time())
    template = CheckRequest()
    http = template.attributes.request.http
    http.method, http.path, http.host = "GET", "/api/orders/1", "api.example.com"
    template.attributes.source.address.socket_address.address = "198.51.100.7"
    base = template.SerializeToString()
    for i in range(args.tokens):
        claims = {"iss": "https://probe.example.com", "aud": "orders-api", "sub": f"user-{i}", "iat": now,
                  "exp": now + 3600, "groups": ["orders-reader"], "tenant": "t1", "jti": f"probe-{i}"}
        payload = b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}"
        signature = b64(hmac.new(SECRET, signing_input.encode(), hashlib.sha256).digest())
        # A new message per request, as the server parses one per Check (a
        # upb message edited in place keeps every old value in its arena).
        message = CheckRequest.FromString(base)
        message.attributes.request.http.headers.update(
            {"authorization": f"Bearer {signing_input}.{signature}", "x-tenant": "t1", "x-request-id": f"r{i}"})
        loop.run_until_complete(service.check(message.SerializeToString(), None))
    end = rss_mb()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    state = service.state
    decisions = sum(service.telemetry.decisions.values())
    print(json.dumps({
        "tokens": args.tokens, "decided": decisions,
        "allowed": sum(n for labels, n in service.telemetry.decisions.items() if labels[:2] == ("allowed", "probe")),
        "rss_start_mb": start, "rss_mb": end, "peak_rss_mb": peak,
        "decision_entries": len(state.decisions), "token_entries": len(state.tokens),
        "decision_evictions": state.decisions.stats.evictions, "token_evictions": state.tokens.stats.evictions,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
