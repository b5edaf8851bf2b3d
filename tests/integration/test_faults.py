"""Faults under load (docs/security.md 53), through a real Envoy configured by
``authz envoy-config --shape edge`` and a real ``authz serve --workers 2``:
a worker SIGKILLed, a valid reload, an invalid reload, the key-set server
down and back. Two streams run throughout each fault: a valid token and a
forged one (the issuer's kid, signed by a key it never published).

The policy turns both caches off, so every valid request has its signature
checked against the key set authz holds: nothing is answered from a cache
while a worker restarts or the key-set server is down.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authz.tools.envoy_config import EnvoyOptions
from testkit.idp import FakeIdP, remote_issuer_policy
from testkit.load import Load
from testkit.procs import Authz, Envoy, free_port, http_get
from testkit.tokens import claims, jwks, public_jwk, rsa_key, token

KEY = rsa_key("faults")
FORGER = rsa_key("faults-forger")
PREFIX = "/authz"
#: The most of the valid requests a SIGKILLed worker may cost (docs/security.md 53).
KILL_LOSS_BOUND = 0.005
#: Answers per stream counted before the fault and after it is over: every
#: window has at least this many valid requests on each side of the fault.
BEFORE, AFTER = 300, 600


def _policy(idp: FakeIdP, public: str = "[/public]") -> str:
    return remote_issuer_policy(idp, name="idp", rest=f"""rules:
  - {{name: public, effect: allow, paths: {public}, anonymous: true}}
cache:
  decisions: {{max_entries: 0}}
  tokens: {{max_entries: 0}}
""")


def _write(path: Path, text: str) -> None:
    """Atomic replace, as editors and Kubernetes volume updates do."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class Stack:
    door: str
    idp: FakeIdP
    authz: Authz
    envoy: Envoy
    policy: Path

    def streams(self) -> dict[str, dict[str, str]]:
        valid = token(claims(iss=self.idp.issuer), key=KEY, kid="k1")
        forged = token(claims(iss=self.idp.issuer, sub="mallory"), key=FORGER, kid="k1")
        return {"valid": {"authorization": f"Bearer {valid}"}, "forged": {"authorization": f"Bearer {forged}"}}

    def under_load(self, fault: Callable[[], None]) -> dict[str, Counter[int | str]]:
        """Both streams through Envoy: some answers, the fault, more answers."""
        with Load(self.envoy.url + "/api/orders/1", self.streams()) as load:
            load.wait_for("valid", BEFORE)
            fault()
            load.wait_for("valid", AFTER)
            counts = load.stop()
        # Never a forged allow: each forged request was denied, by authz
        # (401) or, when a check failed, by Envoy (403).
        assert counts["forged"] and set(counts["forged"]) <= {401, 403}, counts
        assert self.ext_authz().get("failure_mode_allowed", 0) == 0
        return counts

    def readyz(self) -> dict[str, Any]:
        return dict(json.loads(self.authz.get("/readyz")[2]))

    def ext_authz(self) -> dict[str, int]:
        return {k.rsplit(".", 1)[-1]: v for k, v in self.envoy.stats().items()
                if k.startswith("http.ingress_http.ext_authz.")}


def _lost(counts: dict[str, Counter[int | str]]) -> tuple[int, int]:
    valid = counts["valid"]
    total = sum(valid.values())
    return total - valid[200], total


@pytest.fixture(scope="module", params=["grpc", "http"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    door = request.param
    tmp = tmp_path_factory.mktemp(f"faults-{door}")
    with FakeIdP() as idp:
        idp.jwks = jwks(public_jwk(KEY, kid="k1", alg="RS256"))
        policy = tmp / "policy.yaml"
        policy.write_text(_policy(idp))
        if door == "grpc":
            # As the edge config ships: each worker's own port an endpoint.
            authz = Authz(policy, workers=2, worker_ports=True)
            endpoints = authz.worker_addresses
        else:
            address = f"127.0.0.1:{free_port()}"
            authz = Authz(policy, workers=2, extra=["--http-authz-address", address, "--http-authz-prefix", PREFIX])
            endpoints = [address]
        with authz, Envoy(tmp, EnvoyOptions(shape="edge", authz=endpoints, protocol=door, path_prefix=PREFIX,
                                            direct_response=True)) as envoy:
            yield Stack(door, idp, authz, envoy, policy)


def test_sec_53_a_killed_worker_costs_at_most_half_a_percent_and_never_a_forged_allow(stack: Stack) -> None:
    victim = stack.readyz()["workers"][0]
    pid = victim["pid"]

    def kill() -> None:
        mark = stack.authz.proc.mark()
        os.kill(pid, signal.SIGKILL)
        stack.authz.proc.wait_for(r"worker 0 exited \(code -9\)", since=mark, timeout=30)
        stack.authz.proc.wait_for(r"worker 0 \(pid \d+\) serving", since=mark, timeout=60)

    counts = stack.under_load(kill)
    lost, total = _lost(counts)
    assert lost <= KILL_LOSS_BOUND * total, counts
    workers = stack.readyz()["workers"]
    assert workers[0]["pid"] != pid and all(w["ready"] for w in workers), workers
    if stack.door == "grpc":
        # Envoy sends the restarted worker checks again (its own port, its
        # health check SERVING): wait for it, under load, within a bound.
        with Load(stack.envoy.url + "/api/orders/1", stack.streams()) as load:
            for _ in range(100):
                if stack.readyz()["workers"][0]["decisions"]:
                    break
                load.wait_for("valid", 50)
            else:
                pytest.fail("the restarted worker never got a check")
            assert load.stop()["valid"][200] == load.answered("valid")


def test_sec_53_a_valid_reload_costs_nothing(stack: Stack) -> None:
    original = stack.policy.read_text()

    def reload(text: str) -> Callable[[], None]:
        def fault() -> None:
            mark = stack.authz.proc.mark()
            _write(stack.policy, text)
            stack.authz.proc.wait_for("policy reloaded", since=mark, timeout=30)
        return fault

    counts = stack.under_load(reload(_policy(stack.idp, public="[/public, /status]")))
    assert _lost(counts)[0] == 0, counts
    assert http_get(stack.envoy.url + "/status")[0] == 200  # the change is in force
    counts = stack.under_load(reload(original))
    assert _lost(counts)[0] == 0, counts


def test_sec_53_an_invalid_reload_costs_nothing(stack: Stack) -> None:
    original = stack.policy.read_text()
    before = stack.ext_authz()

    def broken() -> None:
        mark = stack.authz.proc.mark()
        _write(stack.policy, original.replace("version: 1", "version: 2"))
        stack.authz.proc.wait_for("policy reload failed", since=mark, timeout=30)

    counts = stack.under_load(broken)
    assert _lost(counts)[0] == 0, counts
    assert "version" in str(stack.readyz()["last_reload_error"])
    assert stack.ext_authz().get("error", 0) == before.get("error", 0)  # not one check failed
    mark = stack.authz.proc.mark()
    _write(stack.policy, original)
    stack.authz.proc.wait_for("policy reloaded", since=mark, timeout=30)


def test_sec_53_the_key_set_server_down_and_back_costs_nothing(stack: Stack) -> None:
    """Down: the provider drops every connection, and authz's refetches
    (a token with a kid it does not know asks for one) fail; the keys it
    holds keep verifying every valid token. Then the provider is back."""
    unknown = token(claims(iss=stack.idp.issuer), key=FORGER, kid="rotated-away")

    def failures() -> float:
        for line in stack.authz.get("/metrics")[2].decode().splitlines():
            if line.startswith('authz_jwks_fetches_total{issuer="idp",outcome="failure"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def down_and_back() -> None:
        failed = failures()
        stack.idp.mode = "drop"
        for _ in range(200):  # each a request that may start a refetch
            assert http_get(stack.envoy.url + "/api/orders/1", {"authorization": f"Bearer {unknown}"})[0] == 401
            if failures() > failed:
                break
        else:
            pytest.fail("authz never tried the key-set server while it was down")
        stack.idp.mode = "ok"

    counts = stack.under_load(down_and_back)
    assert _lost(counts)[0] == 0, counts
