"""Decisions per second of the decision core, with no cache to help.

Loads the contract policy (``../shared/contract/policy.yaml`` beside the
checkout, or ``--policy``), mints distinct RS256 tokens with the contract's
signing key up front (each with its own ``jti``, so no token or decision
cache could answer twice), and times ``Engine.decide`` on an allowed
``GET /api/orders`` for each. Every decision runs the whole pipeline: path
normalization, the RS256 signature check, the deny rules (one CEL
condition), the role permissions, the ``x-user-id`` header (CEL) and the
ES256 identity token.

Also timed alone, to show where the time goes: verifying one token, the
tenant-isolation CEL condition (with its variables built, and prebuilt),
and signing one identity token.

Run: ``python benchmarks/core_bench.py [--quick]``. Prints a table; asserts
nothing about time (it does check that every decision is an allow).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authz.config import load_policy
from authz.engine import Engine
from authz.identity.jwt import JwtSource
from authz.policy import View
from authz.request import Request

REPO = Path(__file__).resolve().parents[1]
CONTRACT = REPO.parent / "shared" / "contract"
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


Timing = tuple[float, float]  # (best, median) µs per call


def timed(run: Callable[[Any], Any], items: list[Any], rounds: int,
          before_round: Callable[[], None] = lambda: None) -> Timing:
    """Best and median over ``rounds`` of the µs per call across all items
    (the best is the figure least disturbed by a busy machine)."""
    samples = []
    for _ in range(rounds):
        before_round()
        start = time.perf_counter()
        for item in items:
            run(item)
        samples.append((time.perf_counter() - start) / len(items) * 1e6)
    return min(samples), statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--policy", type=Path, default=CONTRACT / "policy.yaml")
    parser.add_argument("--key", type=Path, default=CONTRACT / "corp-signing-key.pem",
                        help="PEM private key the policy's issuer trusts (kid corp-2026)")
    parser.add_argument("--tokens", type=int, help="distinct tokens (default 3000, 300 with --quick)")
    args = parser.parse_args(argv)
    count = args.tokens or (300 if args.quick else 3000)

    policy = load_policy(str(args.policy))
    engine = Engine(policy)
    for source in policy.credential_sources:
        if isinstance(source, JwtSource):
            source.cache = None  # no token cache: every token is verified
    now = time.time()
    started = time.perf_counter()
    tokens = mint_tokens(args.key, count, now)
    print(f"policy: {args.policy}")
    print(f"minted {count} distinct RS256 tokens in {time.perf_counter() - started:.1f}s; Python {sys.version.split()[0]}\n")
    requests = [build_request(token, i) for i, token in enumerate(tokens)]

    # Every token is used once per pass; later passes see the same tokens,
    # which changes nothing since nothing is cached.
    decisions = [engine.decide(r) for r in requests[: min(count, 100)]]  # warm up
    refused = [d for d in decisions if not d.allowed]
    if refused:
        print(f"error: the benchmark request was denied: {refused[0].reason.value} {refused[0].detail or ''}")
        return 1
    rounds = 3 if args.quick else 5
    signer = policy.response.identity_token

    def forget_identity_tokens() -> None:
        # Each token has its own subject; without this, rounds after the
        # first would reuse the identity tokens the first one signed.
        if signer is not None:
            signer._reuse.clear()

    per_decision = timed(engine.decide, requests, rounds, forget_identity_tokens)
    reused = timed(engine.decide, requests, rounds)

    # The parts, alone.
    jwt_source = next(s for s in policy.credential_sources if isinstance(s, JwtSource))
    verify = timed(lambda t: jwt_source.verify(t, now=now, may_wait=False), tokens, rounds)
    rule = next(r for r in policy.deny_rules if r.name == "tenant-isolation")
    when = rule.matcher.when
    assert when is not None
    identities = [jwt_source.verify(t, now=now, may_wait=False) for t in tokens]
    views = [View(r, "/api/orders", "", identity, now) for r, identity in zip(requests, identities, strict=True)]

    def condition_with_variables(view: View) -> Any:
        fresh = View(view.request, view.path, view.query, view.identity, view.now)
        return when.evaluate(fresh.variables(when.roots))

    with_build = timed(condition_with_variables, views, rounds)
    prebuilt = [v.variables(when.roots) for v in views]
    condition = timed(when.evaluate, prebuilt, rounds)
    sign = timed(lambda i: signer.sign(i, "", int(now)), identities, rounds) if signer is not None else None

    rows: list[tuple[str, Timing, bool]] = [
        ("Engine.decide, allow, no cache (new caller each time)", per_decision, True),
        ("Engine.decide, allow, no cache, identity token reused", reused, True),
        ("  RS256 token verification alone", verify, False),
        ("  CEL condition (tenant-isolation), variables built", with_build, False),
        ("  CEL condition (tenant-isolation), variables prebuilt", condition, False),
    ]
    if sign is not None:
        rows.append(("  ES256 identity token signing alone", sign, False))
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'µs best':>8}  {'median':>8}  {'decisions/s':>11}")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 8}  {'-' * 11}")
    for name, (best, median), is_decision in rows:
        rate = f"{1e6 / best:,.0f}" if is_decision else ""
        print(f"{name:<{width}}  {best:>8.1f}  {median:>8.1f}  {rate:>11}")
    print(f"\n(one thread; {count} tokens x {rounds} rounds; decisions/s from the best round)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
