#!/usr/bin/env python3
"""Write a ghz config whose ``data`` is an array of CheckRequests, each with a
different valid token: the "unique tokens" cache-miss scenario.

A ghz template cannot sign a JWT, so the tokens are minted here, ahead of the
run. ghz sends the array round-robin (request i carries element i mod N), so
with ``total`` = N every request presents a token authz has not verified yet:
each one misses the token cache and the decision cache, and costs a full
signature check.

The request shape is taken from ``cache-miss.json`` (same headers, same
per-request ``:path`` that defeats the decision cache); only the bearer token
differs per element. The tokens are development tokens for the bundled
example policy only: the first comes from ``authz.tools.devtoken.mint`` (what
``authz token`` runs: issuer, audience, roles claim and key id from the
policy), the others carry the same claims with their own ``sub`` and ``jti``,
signed by PyJWT with the same key and header (minting each through the policy
loader would take ~0.1 s per token).

Usage, from the repository root::

    .venv/bin/python benchmarks/ghz/make_tokens.py --count 200 --out benchmarks/ghz/cache-miss-tokens.json
    .venv/bin/python benchmarks/ghz/make_tokens.py --count 20000 --out /tmp/tokens.json   # a longer run
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TEMPLATE = HERE / "cache-miss.json"
DEFAULT_POLICY = REPO / "examples" / "policy.yaml"
DEFAULT_KEY = REPO / "examples" / "keys" / "dev-issuer.pem"
TEN_YEARS = 10 * 365 * 24 * 3600
NAME = "authz cache miss: a different token on every request (round-robin over data)"


def mint_tokens(count: int, *, policy: Path = DEFAULT_POLICY, key_file: Path = DEFAULT_KEY,
                roles: list[str] | None = None, ttl: int = TEN_YEARS) -> list[str]:
    """``count`` distinct valid tokens for the policy's first issuer."""
    from authz.tools.devtoken import mint

    if count < 1:
        raise ValueError("count must be at least 1")
    roles = roles if roles is not None else ["orders-reader"]
    first = mint(str(policy), issuer_name=None, key_file=str(key_file), subject="ghz-user-00000", roles=roles,
                 scopes=[], claims=[f"jti={uuid.uuid4().hex}"], ttl=ttl, audience=None)
    header = jwt.get_unverified_header(first)
    claims = jwt.decode(first, options={"verify_signature": False})
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    extra_header = {name: value for name, value in header.items() if name != "alg"}
    tokens = [first]
    for i in range(1, count):
        body = {**claims, "sub": f"ghz-user-{i:05d}", "jti": uuid.uuid4().hex}
        tokens.append(jwt.encode(body, key, algorithm=header["alg"], headers=extra_header))  # type: ignore[arg-type]
    return tokens


def with_token(request: dict[str, Any], token: str) -> dict[str, Any]:
    out = copy.deepcopy(request)
    out["attributes"]["request"]["http"]["headers"]["authorization"] = f"Bearer {token}"
    return out


def build_config(tokens: list[str], template: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ghz config: ``cache-miss.json`` with one data element per token and
    ``total`` = the number of tokens (so no token is sent twice)."""
    base = template if template is not None else json.loads(TEMPLATE.read_text())
    if not isinstance(base.get("data"), dict):
        raise ValueError(f"{TEMPLATE.name}: data must be one CheckRequest object")
    config = {key: value for key, value in base.items() if key not in ("data", "duration", "total")}
    config["name"] = NAME
    config["total"] = len(tokens)
    # ghz refuses more connections than workers; keep both within the run.
    config["concurrency"] = min(int(base.get("concurrency", 50)), len(tokens))
    config["connections"] = min(int(base.get("connections", 1)), config["concurrency"])
    config["data"] = [with_token(base["data"], token) for token in tokens]
    return config


def dumps(config: dict[str, Any]) -> str:
    """JSON with one line per setting and one line per CheckRequest (the file
    holds many; this keeps it compact and readable line by line)."""
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in config.items() if key != "data"]
    elements = ",\n".join(f"    {json.dumps(element, separators=(',', ':'))}" for element in config["data"])
    lines.append(f'  "data": [\n{elements}\n  ]')
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, required=True, help="number of distinct tokens (= requests in the run)")
    parser.add_argument("--out", type=Path, required=True, help="the ghz config file to write")
    parser.add_argument("--config", type=Path, default=DEFAULT_POLICY,
                        help="policy naming the issuer (default: the example)")
    parser.add_argument("--key", type=Path, default=DEFAULT_KEY,
                        help="the issuer's private key (default: the example's dev key)")
    parser.add_argument("--role", action="append", default=None, help="role claim (repeatable; default orders-reader)")
    parser.add_argument("--ttl", type=int, default=TEN_YEARS, help="token lifetime in seconds (default: 10 years)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    tokens = mint_tokens(args.count, policy=args.config, key_file=args.key, roles=args.role, ttl=args.ttl)
    config = build_config(tokens)
    args.out.write_text(dumps(config))
    print(f"wrote {args.out}: {len(tokens)} CheckRequests, each with its own token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
