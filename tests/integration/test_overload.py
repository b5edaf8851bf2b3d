"""Overload through a real Envoy (docs/security.md 54), both doors: a worker
already deciding ``--max-concurrent-checks`` checks refuses the next one at
once (gRPC: RESOURCE_EXHAUSTED; the HTTP door: 503), Envoy denies it (403,
``failure_mode_allow: false``) without retrying it, and authz answers
normally as soon as the load is gone."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from authz.tools.envoy_config import EnvoyOptions
from testkit.idp import FakeIdP, slow_issuer_policy
from testkit.procs import Authz, Envoy, free_port, http_get
from testkit.tokens import claims, jwks, public_jwk, rsa_key, token

KEY = rsa_key("overload")
PREFIX = "/authz"
EXCESS = 10


def _policy(idp: FakeIdP) -> str:
    """One issuer whose key set arrives only when ``idp.gate`` opens, and a
    public route that needs no key: what it answers is the overload's doing."""
    return slow_issuer_policy(idp, "  - {name: public, effect: allow, paths: [/public], anonymous: true}\n")


def _in_flight(authz: Authz) -> float:
    for line in authz.get("/metrics")[2].decode().splitlines():
        if line.startswith("authz_checks_in_flight "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _counters(envoy: Envoy) -> dict[str, int]:
    stats = envoy.stats()
    return {name: stats.get(key, 0) for name, key in {
        "ok": "http.ingress_http.ext_authz.ok", "error": "http.ingress_http.ext_authz.error",
        "denied": "http.ingress_http.ext_authz.denied", "retries": "cluster.authz.upstream_rq_retry",
        "failure_mode_allowed": "http.ingress_http.ext_authz.failure_mode_allowed"}.items()}


@pytest.mark.parametrize("door", ["grpc", "http"])
def test_sec_54_checks_beyond_the_limit_are_denied_at_once_and_authz_recovers(tmp_path: Path, door: str) -> None:
    with FakeIdP() as idp:
        idp.jwks = jwks(public_jwk(KEY, kid="k1", alg="RS256"))
        idp.mode = "gate"
        policy = tmp_path / "policy.yaml"
        policy.write_text(_policy(idp))
        extra = ["--max-concurrent-checks", "1"]
        endpoint = f"127.0.0.1:{free_port()}"
        if door == "http":
            extra += ["--http-authz-address", endpoint, "--http-authz-prefix", PREFIX]
        else:
            extra += ["--grpc-address", endpoint]
        # A call timeout long enough that the held check is still waiting
        # for its key set when the excess calls have all been answered.
        options = EnvoyOptions(shape="edge", authz=[endpoint], protocol=door, path_prefix=PREFIX,
                               direct_response=True, timeout=5.0)
        with Authz(policy, workers=1, extra=extra) as authz, Envoy(tmp_path, options) as envoy, \
                concurrent.futures.ThreadPoolExecutor(1) as pool:
            assert idp.wait_for_hits("/jwks", 1)  # the first fetch is held at the gate
            assert http_get(envoy.url + "/public")[0] == 200  # the control: not overloaded, allowed
            bearer = token(claims(iss=idp.issuer, groups=None, roles=["reader"]), key=KEY, kid="k1")
            held = pool.submit(http_get, envoy.url + "/api/orders", {"authorization": f"Bearer {bearer}"})
            for _ in range(2000):  # until the held check is in the worker, waiting for the key set
                if _in_flight(authz) >= 1:
                    break
            else:
                pytest.fail("the held check never reached the worker")
            before = _counters(envoy)

            answers = [http_get(envoy.url + "/public")[0] for _ in range(EXCESS)]

            assert answers == [403] * EXCESS  # refused by authz, denied by Envoy: never the 200 of /public
            assert not held.done()  # answered while the held check still waits: at once
            after = _counters(envoy)
            assert after["error"] - before["error"] == EXCESS and after["ok"] == before["ok"]
            assert after["retries"] == before["retries"]  # an overloaded authz is never retried
            assert after["failure_mode_allowed"] == 0

            idp.gate.set()
            status, _headers, body = held.result(timeout=30)
            assert status == 200, body  # the held check got its keys and its allow
            assert http_get(envoy.url + "/public")[0] == 200  # and authz answers again
            assert authz.get("/readyz")[0] == 200
