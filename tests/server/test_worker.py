"""One worker process's object, driven through its control messages in this
process: reloads and the key sets they keep or replace (docs/security.md 52)."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
from pathlib import Path

from google.protobuf import json_format

from authz.cli import build_parser
from authz.identity.jwks import RemoteKeys, default_fetch_loop
from authz.server.generation import Target, load_consistent
from authz.server.options import ServeOptions
from authz.server.worker import Worker
from authz.wire.grpc import CheckRequest, CheckResponse
from testkit.idp import FakeIdP, remote_issuer_policy
from testkit.requests import check_request_json
from testkit.tokens import claims, jwks, public_jwk, rsa_key, token

KEY = rsa_key("worker-reload")
NEXT = rsa_key("worker-reload-next")
CYCLES = 30


def _write_policy(path: Path, idp: FakeIdP, cycle: int) -> None:
    # Every reload changes the issuer's fetch settings, so every reload makes a
    # new key set and drops the last one (whose id the next may then reuse).
    path.write_text(remote_issuer_policy(idp, issuer_lines=f"    jwks: {{fetch_timeout: {1 + cycle % 2}s}}\n"))


def _target(path: Path) -> Target:
    """The generation a supervisor would make of the policy at ``path``."""
    policy, digests = load_consistent(str(path))
    return Target(policy.generation, digests)


def _allowed(worker: Worker, bearer: str) -> bool:
    assert worker.service is not None
    message = json_format.ParseDict(check_request_json("GET", "/api/orders", headers={
        "authorization": f"Bearer {bearer}"}), CheckRequest())
    response = CheckResponse.FromString(worker.service.check_sync(message.SerializeToString(), None))
    return bool(response.status.code == 0)


def _fetch_begun_after_now(keys: RemoteKeys) -> None:
    """Wait for a fetch of the key set that began after this call. The one in
    flight, which fetch_now() hands back, may be the background refresh that
    began before, so that one is waited out first."""
    keys.fetch_now().result(timeout=10)
    assert keys.fetch_now().result(timeout=10)


def test_sec_52_after_many_reloads_each_key_set_has_one_listener_and_a_removed_key_stops(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _parent, child = multiprocessing.Pipe()
    with FakeIdP() as idp:
        _write_policy(path, idp, 0)
        options = ServeOptions.from_args(build_parser().parse_args(["serve", "--config", str(path), "--workers", "1"]))
        worker = Worker(options, 0, child, _target(path))
        live: list[RemoteKeys] = []
        try:
            for cycle in range(CYCLES):
                kid = f"k{cycle}"
                idp.jwks = jwks(public_jwk(KEY, kid=kid))
                _write_policy(path, idp, cycle)
                assert asyncio.run(worker._handle({"op": "reload", "target": _target(path).as_message()}))["ok"]
                assert worker.service is not None
                state = worker.service.state
                live = [issuer.keys for issuer in state.policy.issuers if isinstance(issuer.keys, RemoteKeys)]
                assert len(live) == 1
                assert live[0].listeners == (worker._keys_changed,), f"cycle {cycle}"

                bearer = token(claims(iss=idp.issuer, sub=f"user-{cycle}"), key=KEY, kid=kid)
                assert _allowed(worker, bearer)
                hits = state.decisions.stats.hits
                assert _allowed(worker, bearer)
                assert state.decisions.stats.hits == hits + 1  # a cached allow now exists

                idp.jwks = jwks(public_jwk(NEXT, kid="next"))
                _fetch_begun_after_now(live[0])
                assert not _allowed(worker, bearer), f"cycle {cycle}: a removed key's cached allow survived"
                gc.collect()
        finally:
            for keys in live:
                keys.stop()
            default_fetch_loop().close()  # the worker's registry fetches on the process's loop
