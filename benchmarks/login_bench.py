"""The cached Check of a browser session beside the cached Check of a bearer
token, in one run, one policy, one service: µs per call of each (best of
the rounds, rounds alternating so a machine that slows down slows both),
and the session's cost relative to the token's. A session hit must cost what
a token hit costs: the decision cache keys on the Cookie header as it keys
on the Authorization header, so neither opens a cookie nor verifies a
signature on a hit (docs/security.md K)."""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from google.protobuf import json_format  # noqa: E402

from authz.config import load_policy  # noqa: E402
from authz.engine import Engine, SystemClock  # noqa: E402
from authz.login.cipher import Cipher  # noqa: E402
from authz.server.service import CheckService, PolicyState  # noqa: E402
from authz.server.telemetry import Telemetry  # noqa: E402
from authz.wire.grpc import CheckRequest  # noqa: E402
from testkit.paths import ACCEPTANCE  # noqa: E402
from testkit.requests import check_request_json, request  # noqa: E402
from testkit.tokens import claims, token  # noqa: E402

KEY = bytes(range(32))
POLICY = """\
version: 1
issuers:
  - name: corp
    issuer: https://idp.example.com
    audiences: [orders-api]
    jwks_file: corp.jwks.json
    algorithms: [RS256]
    roles_claim: groups
  - name: web
    issuer: http://127.0.0.1:9
    audiences: [orders-api]
    roles_claim: groups
    login:
      client_id: web
      paths: ["/api/**"]
      session: {keys_file: session.keys}
roles:
  orders-reader:
    - {methods: [GET, HEAD], paths: [/api/orders, /api/orders/*]}
response:
  headers:
    x-user-id: identity.subject
"""
#: What a browser sends besides its cookie.
BROWSER = {"accept": "text/html,application/xhtml+xml", "user-agent": "Mozilla/5.0", "accept-language": "en"}


def raw(headers: dict[str, str]) -> bytes:
    message = json_format.ParseDict(check_request_json("GET", "/api/orders/1", headers=headers), CheckRequest())
    return message.SerializeToString()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=140_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        shutil.copy(ACCEPTANCE / "corp.jwks.json", directory)
        Path(directory, "session.keys").write_text(base64.urlsafe_b64encode(KEY).decode() + "\n")
        Path(directory, "policy.yaml").write_text(POLICY)
        policy = load_policy(str(Path(directory, "policy.yaml")))
    session = Cipher([KEY]).seal(json.dumps({"c": {"sub": "alice", "iss": "http://127.0.0.1:9",
                                                   "groups": ["orders-reader"], "email": "alice@example.com"},
                                             "e": time.time() + 3600}).encode(), "__Host-authz_session")
    # What a browser also sends once the ID token (the sign-out's hint) and a
    # refresh token are kept beside the session (docs/login.md): each in its own sealed cookie.
    id_token = Cipher([KEY]).seal(token(claims(aud="web")).encode(), "__Host-authz_session_id")
    refresh = Cipher([KEY]).seal(base64.urlsafe_b64encode(bytes(32)).decode().encode(), "__Host-authz_session_refresh")
    kept = f"__Host-authz_session={session}; __Host-authz_session_id={id_token}; " \
        f"__Host-authz_session_refresh={refresh}; theme=dark"
    calls = {
        "bearer": raw({**BROWSER, "authorization": f"Bearer {token(claims())}"}),
        "session": raw({**BROWSER, "cookie": f"__Host-authz_session={session}; theme=dark"}),
        "session_kept": raw({**BROWSER, "cookie": kept}),
    }
    service = CheckService(PolicyState(policy, SystemClock()), Telemetry())
    for message in calls.values():
        service.check_sync(message, None)
    per_round = max(args.iterations // args.rounds, 1)
    best = dict.fromkeys(calls, float("inf"))
    check = service.check_sync
    for _ in range(args.rounds):
        for name, message in calls.items():
            started = time.perf_counter()
            for _ in range(per_round):
                check(message, None)
            best[name] = min(best[name], (time.perf_counter() - started) / per_round * 1e6)
    allowed = sum(n for labels, n in service.telemetry.decisions.items() if labels[0] == "allowed")
    if allowed < (per_round * args.rounds + 1) * len(calls):
        raise SystemExit(f"not every Check was allowed: {dict(service.telemetry.decisions)}")
    hits = service.state.decisions.stats.hits
    if hits < per_round * args.rounds * len(calls):
        raise SystemExit(f"not every Check was a decision-cache hit ({hits})")
    # A miss: the engine alone, no cache at all (a session opened, a token's signature verified).
    engine = Engine(policy)
    requests = {name: request("GET", "/api/orders/1", headers=headers) for name, headers in (
        ("bearer", {**BROWSER, "authorization": f"Bearer {token(claims())}"}),
        ("session", {**BROWSER, "cookie": f"__Host-authz_session={session}; theme=dark"}))}
    miss = dict.fromkeys(requests, float("inf"))
    count = max(per_round // 50, 1)
    for _ in range(args.rounds):
        for name, one in requests.items():
            started = time.perf_counter()
            for _ in range(count):
                if not engine.decide(one).allowed:
                    raise SystemExit(f"the {name} request was not allowed")
            miss[name] = min(miss[name], (time.perf_counter() - started) / count * 1e6)
    print(json.dumps({"bearer_hit_us": round(best["bearer"], 3), "session_hit_us": round(best["session"], 3),
                      "session_kept_hit_us": round(best["session_kept"], 3), "cookie_bytes": len(kept),
                      "bearer_miss_us": round(miss["bearer"], 1), "session_miss_us": round(miss["session"], 1),
                      "session_vs_bearer_pct": round((best["session"] - best["bearer"]) / best["bearer"] * 100, 2),
                      "calls_per_kind": per_round * args.rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
