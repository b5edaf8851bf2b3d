"""The cache miss in-process: decisions per second with no cache to help.

Loads the acceptance policy (``tests/fixtures/acceptance/policy.yaml``, or
``--policy``) and mints distinct RS256 tokens with the acceptance issuer's
signing key up front (each with its own ``jti``, so no token or
decision cache could answer twice). For an allowed ``GET /api/orders`` with
each token it times:

- the worker's whole Check as the gRPC server runs it (``check_sync``:
  serialized CheckRequest in, serialized CheckResponse out), with the token
  and decision caches on and emptied before each round, so every call misses
  both, verifies, decides and stores;
- ``Engine.decide`` alone, without the token cache.

Every decision runs the whole pipeline: path normalization, the RS256
signature check, the deny rules (one CEL condition, one CIDR), the role
permissions, the ``x-user-id`` header and the ES256 identity token. A new
caller costs one ES256 signature more than one whose identity token (signed
for the same subject, roles and peer less than half its lifetime ago) is
reused; both are shown. For the new-caller rows each round runs on a policy
loaded afresh (a new ``PolicyState`` swapped into the service, a new
``Engine``), made and warmed up with a spare token outside the timing, so no
identity token signed in an earlier round is reused.

Also timed alone, to show where the time goes: verifying one token, the
tenant-isolation CEL condition, and signing one identity token; and, as
reference points for comparing machines, the RSA-2048 verification itself
and PyJWT's own RS256 decode of the same tokens; and the crypto floor of
a new caller (one RSA-2048 verify plus one P-256 sign, issue 25), with the
ratio of the server-path new caller to it, best to best and median to median.

Run: ``python benchmarks/core_bench.py [--quick]``. Prints a table; asserts
nothing about time (it does check that every decision is an allow).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authz.config import load_policy
from authz.engine import Engine, SystemClock
from authz.identity.jwt import JwtSource
from authz.request import Request, View
from authz.server.service import CheckService, PolicyState
from authz.server.telemetry import Telemetry
from authz.wire.grpc import CheckRequest, CheckResponse
from testkit.paths import ACCEPTANCE

ISSUER = "https://idp.example.com"
KID = "corp-2026"


def mint_tokens(key_file: Path, count: int, now: float) -> list[str]:
    """``count`` distinct, valid RS256 access tokens for the contract issuer."""
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    out = []
    for index in range(count):
        claims = {
            "iss": ISSUER, "aud": "orders-api", "sub": f"user-{index}", "iat": int(now) - 10,
            "exp": int(now) + 3600, "jti": f"bench-{index:08d}", "groups": ["orders-reader"],
            "scope": "orders:read", "tenant": "t1",
        }
        out.append(jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID}))  # type: ignore[arg-type]
    return out


def build_request(token: str, index: int) -> Request:
    headers = {
        ":authority": "api.example.com", ":method": "GET", ":path": "/api/orders", ":scheme": "https",
        "authorization": f"Bearer {token}", "x-tenant": "t1", "x-request-id": f"req-{index}",
        "user-agent": "bench/1.0", "accept": "application/json",
    }
    return Request(
        method="GET", path="/api/orders", host="api.example.com", scheme="https", headers=headers,
        source_address="198.51.100.7", source_port=40000, destination_address="10.0.0.12", destination_port=8080,
    )


def build_check(request: Request) -> bytes:
    """The same request as the serialized CheckRequest Envoy sends."""
    message = CheckRequest()
    attributes = message.attributes
    attributes.source.address.socket_address.address = request.source_address
    attributes.source.address.socket_address.port_value = request.source_port
    attributes.destination.address.socket_address.address = request.destination_address
    attributes.destination.address.socket_address.port_value = request.destination_port
    http = attributes.request.http
    http.method, http.path, http.host, http.scheme, http.protocol = (
        request.method, request.path, request.host, request.scheme, "HTTP/1.1")
    http.headers.update(request.headers)
    return message.SerializeToString()


#: Where the issue's targets were set: PyJWT's RS256 decode took 57 µs and
#: the RSA-2048 verification inside it 15.7 µs.
REFERENCE_PYJWT_US = 57.0
REFERENCE_RSA_US = 15.7
TARGET_US = 150.0

Timing = tuple[float, float]  # (best, median) µs per call


def timed(run: Callable[[Any], Any], items: list[Any], rounds: int) -> Timing:
    """Best and median over ``rounds`` of the µs per call across all items
    (the best is the figure least disturbed by a busy machine)."""
    return timed_rounds(lambda: run, items, rounds)


def timed_rounds(prepare: Callable[[], Callable[[Any], Any]], items: list[Any], rounds: int) -> Timing:
    """As :func:`timed`, with ``prepare()`` called before each round, outside
    the timing, for the function that round times."""
    samples = []
    for _ in range(rounds):
        run = prepare()
        start = time.perf_counter()
        for item in items:
            run(item)
        samples.append((time.perf_counter() - start) / len(items) * 1e6)
    return min(samples), statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--policy", type=Path, default=ACCEPTANCE / "policy.yaml")
    parser.add_argument("--key", type=Path, default=ACCEPTANCE / "corp-signing-key.pem",
                        help="PEM private key the policy's issuer trusts (kid corp-2026)")
    parser.add_argument("--tokens", type=int, help="distinct tokens (default 3000, 300 with --quick)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line, last")
    args = parser.parse_args(argv)
    count = args.tokens or (300 if args.quick else 3000)

    now = time.time()
    started = time.perf_counter()
    # One token more than is timed: the spare warms up each fresh policy.
    *tokens, spare_token = mint_tokens(args.key, count + 1, now)
    print(f"policy: {args.policy}")
    print(f"minted {count} distinct RS256 tokens in {time.perf_counter() - started:.1f}s; Python "
          f"{sys.version.split()[0]}\n")
    requests = [build_request(token, i) for i, token in enumerate(tokens)]
    spare = build_request(spare_token, count)
    rounds = 3 if args.quick else 5

    def fresh_state() -> PolicyState:
        return PolicyState(load_policy(str(args.policy)), SystemClock())

    # The server's Check, caches on: emptied before each round, so that
    # every call misses both and stores what it decided.
    states = [fresh_state()]
    service = CheckService(states[0], Telemetry())
    checks = [build_check(r) for r in requests]
    spare_check = build_check(spare)
    answer = CheckResponse.FromString(service.check_sync(spare_check, None))
    if answer.status.code != 0:
        print(f"error: the benchmark CheckRequest was denied: {answer.denied_response.body}")
        return 1

    def new_caller_round() -> Callable[[bytes], bytes]:
        # A policy loaded afresh, so its identity-token signer has signed
        # nothing yet: every caller in the round is new to it.
        states.append(fresh_state())
        service.state = states[-1]
        service.check_sync(spare_check, None)  # warm up, outside the timing
        service.state.invalidate()
        return lambda raw: service.check_sync(raw, None)

    def reused_round() -> Callable[[bytes], bytes]:
        # The same policy as the last round: its signer reuses the identity
        # tokens it signed for these callers; only the caches are emptied.
        service.state.invalidate()
        return lambda raw: service.check_sync(raw, None)

    check_new = timed_rounds(new_caller_round, checks, rounds)
    check_reused = timed_rounds(reused_round, checks, rounds)
    misses = {name: sum(state.cache_sources()[name][0].misses for state in states) for name in ("decisions", "tokens")}
    if min(misses.values()) < count * rounds * 2:
        print(f"error: the server-path rounds did not miss every cache: {misses}")
        return 1

    policy = load_policy(str(args.policy))
    engine = Engine(policy)  # no token cache: every token is verified

    # Every token is used once per pass; later passes see the same tokens,
    # which changes nothing since nothing is cached.
    decisions = [engine.decide(r) for r in requests[: min(count, 100)]]  # warm up
    refused = [d for d in decisions if not d.allowed]
    if refused:
        print(f"error: the benchmark request was denied: {refused[0].reason.value} {refused[0].detail or ''}")
        return 1
    signer = policy.response.identity_token

    def new_caller_engine() -> Callable[[Request], Any]:
        # Each token has its own subject; a policy loaded afresh for each
        # round keeps rounds after the first from reusing the identity
        # tokens an earlier one signed.
        nonlocal engine
        engine = Engine(load_policy(str(args.policy)))
        engine.decide(spare)  # warm up, outside the timing
        return engine.decide

    per_decision = timed_rounds(new_caller_engine, requests, rounds)
    reused = timed(engine.decide, requests, rounds)  # the last round's engine: every identity token reused

    # The parts, alone.
    jwt_source = next(s for s in policy.credential_sources if isinstance(s, JwtSource))
    verify = timed(lambda t: jwt_source.verify(t, now=now), tokens, rounds)
    rule = next(r for r in policy.deny_rules if r.name == "tenant-isolation")
    when = rule.matcher.when
    assert when is not None
    identities = [jwt_source.verify(t, now=now) for t in tokens]
    views = [View(r, "/api/orders", "", identity, now) for r, identity in zip(requests, identities, strict=True)]

    def condition_with_variables(view: View) -> Any:
        fresh = View(view.request, view.path, view.query, view.identity, view.now)
        return when.evaluate(fresh.variables(when.roots))

    with_build = timed(condition_with_variables, views, rounds)
    prebuilt = [v.variables(when.roots) for v in views]
    condition = timed(when.evaluate, prebuilt, rounds)
    sign = (timed(lambda i: signer.sign(i, "", int(now), int(now) + 60), identities, rounds)
            if signer is not None else None)

    # Reference points: the same tokens through PyJWT, and the RSA alone.
    private = serialization.load_pem_private_key(args.key.read_bytes(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    public = private.public_key()
    pyjwt = timed(lambda t: jwt.decode(t, public, algorithms=["RS256"], audience="orders-api"), tokens, rounds)
    signed = [(t.rsplit(".", 1)[0].encode(), jwt.utils.base64url_decode(t.rsplit(".", 1)[1])) for t in tokens]
    rsa_only = timed(lambda pair: public.verify(pair[1], pair[0], padding.PKCS1v15(), hashes.SHA256()), signed, rounds)
    # The crypto floor of a new caller (issue 25): that RSA-2048 verify plus
    # one P-256 signature over an identity token's signing input, timed the
    # same way in the same run.
    p256 = ec.generate_private_key(ec.SECP256R1())
    inputs = [f"{t.rsplit('.', 2)[0]}.{i:08d}".encode() for i, t in enumerate(tokens)]
    p256_only = timed(lambda data: p256.sign(data, ec.ECDSA(hashes.SHA256())), inputs, rounds)
    floor = (rsa_only[0] + p256_only[0], rsa_only[1] + p256_only[1])

    rows: list[tuple[str, Timing, bool]] = [
        ("Check, server path, token and decision caches missed (new caller)", check_new, True),
        ("Check, server path, caches missed, identity token reused", check_reused, True),
        ("Engine.decide, allow, no cache (new caller each time)", per_decision, True),
        ("Engine.decide, allow, no cache, identity token reused", reused, True),
        ("  RS256 token verification alone", verify, False),
        ("  CEL condition (tenant-isolation), variables built", with_build, False),
        ("  CEL condition (tenant-isolation), variables prebuilt", condition, False),
    ]
    if sign is not None:
        rows.append(("  ES256 identity token signing alone", sign, False))
    rows.append(("reference: PyJWT jwt.decode, RS256", pyjwt, False))
    rows.append(("reference: RSA-2048 verify alone (cryptography)", rsa_only, False))
    rows.append(("reference: P-256 sign alone (cryptography)", p256_only, False))
    rows.append(("crypto floor: RSA-2048 verify + P-256 sign", floor, False))
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'µs best':>8}  {'median':>8}  {'decisions/s':>11}")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 8}  {'-' * 11}")
    for name, (best, median), is_decision in rows:
        rate = f"{1e6 / best:,.0f}" if is_decision else ""
        print(f"{name:<{width}}  {best:>8.1f}  {median:>8.1f}  {rate:>11}")
    print(f"\n(one thread; {count} tokens x {rounds} rounds; decisions/s from the best round)")
    # The targets were set on a faster machine: scale the server-path miss
    # by how much slower the same reference operations run here.
    print(f"\nThe {TARGET_US:.0f} µs target was set where PyJWT's decode took {REFERENCE_PYJWT_US:.0f} µs and the RSA "
          f"verification {REFERENCE_RSA_US} µs; here they take {pyjwt[0]:.1f} and {rsa_only[0]:.1f} µs.")
    for name, (best, _median) in (("new caller", check_new), ("identity token reused", check_reused)):
        by_pyjwt = best * REFERENCE_PYJWT_US / pyjwt[0]
        by_rsa = best * REFERENCE_RSA_US / rsa_only[0]
        print(f"Server-path miss, {name}, scaled to that machine: {by_pyjwt:.0f} µs by PyJWT's ratio, "
              f"{by_rsa:.0f} µs by the RSA ratio (target <= {TARGET_US:.0f} µs)")
    ratio = (check_new[0] / floor[0], check_new[1] / floor[1])
    print(f"\nA new caller (server path) is {ratio[0]:.2f}x the crypto floor, best against best "
          f"({ratio[1]:.2f}x median against median); issue 25's goal: <= 2.3x")
    if args.json:
        print(json.dumps({
            "check_new_us": check_new[0], "check_reused_us": check_reused[0],
            "check_new_median_us": check_new[1], "floor_us": floor[0], "floor_median_us": floor[1],
            "p256_sign_us": p256_only[0], "floor_ratio": ratio[0], "floor_ratio_median": ratio[1],
            "decide_new_us": per_decision[0], "decide_reused_us": reused[0],
            "pyjwt_decode_us": pyjwt[0], "rsa_verify_us": rsa_only[0],
            "reference_pyjwt_us": REFERENCE_PYJWT_US, "reference_rsa_us": REFERENCE_RSA_US,
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
