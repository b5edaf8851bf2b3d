"""Fail fast, never share silently (docs/security.md 64): ``authz serve`` on a
taken address exits non-zero at once, naming it; a second authz started on a
running one's ports is refused while the first answers all the traffic,
through real Envoy on both doors; after valid, broken and restored policy
edits every worker runs the supervisor's generation, and a worker that
cannot load it is not ready."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authz.server.binding import EXIT_ADDRESS_IN_USE
from authz.tools.envoy_config import EnvoyOptions
from testkit.paths import ACCEPTANCE
from testkit.procs import Authz, Echo, Envoy, Proc, free_port, free_port_run, http_get
from testkit.requests import check_request_json

pytestmark = pytest.mark.integration

#: A policy that allows everything: what a stranger sharing the port would answer.
ALLOW_ALL = """version: 1
rules:
  - {name: everyone, effect: allow, paths: ["/**"], anonymous: true}
"""


def _copy_policy(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("policy.yaml", "corp.jwks.json", "identity-es256.pem"):
        shutil.copy(ACCEPTANCE / name, directory / name)
    return directory / "policy.yaml"


def _dir(path: Path) -> Path:
    path.mkdir()
    return path


def _local() -> str:
    return f"127.0.0.1:{free_port()}"


def _serve(config: Path, *, grpc_address: str, http_address: str, extra: tuple[str, ...] = ()) -> tuple[int, str]:
    """Run ``authz serve`` until it exits or says it is ready: (exit code, output)."""
    proc = Proc([sys.executable, "-m", "authz", "serve", "--config", str(config), "--workers", "2",
                 "--grpc-address", grpc_address, "--http-address", http_address, *extra], name="authz-2")
    try:
        line = proc.wait_for(r"authz ready|cannot listen", timeout=120)
        if "cannot listen" in line:
            proc.popen.wait(60)  # it exits of itself
    finally:
        code = proc.stop()
    assert "authz ready" not in line, "authz started on a taken address:\n" + proc.output()
    return code, proc.output()


@pytest.fixture
def taken() -> Iterator[str]:
    """An address another program listens on (no SO_REUSEPORT)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("which", ["grpc", "http", "http-door", "worker-port"])
def test_serve_on_a_taken_address_exits_at_once_naming_it(taken: str, which: str, tmp_path: Path) -> None:
    grpc_address, http_address, extra = _local(), _local(), []
    if which == "grpc":
        grpc_address = taken
    elif which == "http":
        http_address = taken
    elif which == "http-door":
        extra = ["--http-authz-address", taken]
    else:  # worker 1's own port is the taken one
        extra = ["--worker-ports", str(int(taken.rsplit(":", 1)[1]) - 1)]
    code, output = _serve(ACCEPTANCE / "policy.yaml", grpc_address=grpc_address, http_address=http_address,
                          extra=tuple(extra))
    assert code == EXIT_ADDRESS_IN_USE, output
    assert f"cannot listen on {taken}" in output, output
    assert "restarting" not in output  # no worker crash loop


def _anonymous_check(address: str) -> int:
    """One Check on a new connection (so the kernel chooses its listener anew)."""
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        message = json_format.ParseDict(check_request_json("GET", "/api/orders"), external_auth_pb2.CheckRequest())
        return int(stub.Check(message, timeout=10).status.code)


def test_a_second_authz_on_a_running_ones_ports_is_refused(tmp_path: Path) -> None:
    stranger = tmp_path / "stranger" / "policy.yaml"
    stranger.parent.mkdir()
    stranger.write_text(ALLOW_ALL)
    door = _local()
    base = free_port_run(2)
    extra = ["--http-authz-address", door, "--http-authz-prefix", "/authz", "--trusted-forwarded-hops", "1",
             "--worker-ports", str(base)]
    with Echo() as echo, Authz(ACCEPTANCE / "policy.yaml", workers=2, extra=extra) as running, \
            Envoy(_dir(tmp_path / "grpc"), EnvoyOptions(shape="edge", authz=[running.grpc_address],
                                                        upstream=echo.address)) as grpc_edge, \
            Envoy(_dir(tmp_path / "http"),
                  EnvoyOptions(shape="edge", authz=[door], upstream=echo.address, protocol="http",
                                         path_prefix="/authz")) as http_edge:
        for edge in (grpc_edge, http_edge):  # the running authz's answer: a 401
            assert http_get(edge.url + "/api/orders")[0] == 401
        attempts = [
            (running.grpc_address, ()),  # its gRPC door
            (_local(), ("--http-authz-address", door)),  # its HTTP door
            (_local(), ("--worker-ports", str(base))),  # its workers' own ports
        ]
        for grpc_address, more in attempts:
            code, output = _serve(stranger, grpc_address=grpc_address, http_address=_local(), extra=more)
            assert code == EXIT_ADDRESS_IN_USE, output
            assert "cannot listen on 127.0.0.1:" in output, output
        # Every answer is still the running authz's, on new connections too
        # (the stranger's policy would allow them all).
        assert {_anonymous_check(running.grpc_address) for _ in range(20)} == {16}
        for edge in (grpc_edge, http_edge):
            for _ in range(10):
                status, _headers, body = http_get(edge.url + "/api/orders")
                assert status == 401 and json.loads(body)["reason"] == "missing_credential", body
        # The control: the stranger's policy, served on its own ports, allows.
        with Authz(stranger, workers=1) as alone:
            assert _anonymous_check(alone.grpc_address) == 0


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _readyz(authz: Authz) -> tuple[int, dict[str, object]]:
    status, _headers, body = authz.get("/readyz")
    return status, json.loads(body)


def _same_generation(authz: Authz) -> int:
    status, state = _readyz(authz)
    workers = state["workers"]
    assert isinstance(workers, list)
    assert status == 200 and {w["generation"] for w in workers} == {state["policy_generation"]}, state
    generation = state["policy_generation"]
    assert isinstance(generation, int)
    return generation


def test_every_worker_runs_the_supervisors_generation_through_any_edits(tmp_path: Path) -> None:
    policy = _copy_policy(tmp_path)
    original = policy.read_text()
    valid = original.replace("{methods: [GET, HEAD], paths", "{methods: [GET, HEAD, POST], paths")
    broken = original.replace("version: 1", "version: 2")
    assert valid != original and broken != original
    with Authz(policy, workers=2) as authz:
        generation = _same_generation(authz)
        for text, outcome in [(valid, "policy reloaded"), (broken, "policy reload failed"),
                              (original, "policy reloaded"), (broken, "policy reload failed"),
                              (broken.replace("version: 2", "version: 3"), "policy reload failed"),
                              (valid, "policy reloaded")]:
            mark = authz.proc.mark()
            _write(policy, text)
            authz.proc.wait_for(outcome, since=mark)
            now = _same_generation(authz)
            assert (now > generation) is (outcome == "policy reloaded")
            generation = now

        # A worker that cannot load the supervisor's generation is not ready:
        # worker 0 dies while the file is broken and comes back to a file
        # that is not the generation in force.
        mark = authz.proc.mark()
        _write(policy, broken)
        authz.proc.wait_for("policy reload failed", since=mark)
        _status, state = _readyz(authz)
        workers = state["workers"]
        assert isinstance(workers, list)
        os.kill(workers[0]["pid"], signal.SIGKILL)
        authz.proc.wait_for(f"worker 0 cannot load policy generation {generation}", since=mark)
        status, state = _readyz(authz)
        assert status == 503, state
        workers = state["workers"]
        assert isinstance(workers, list)
        assert [w["ready"] for w in workers] == [False, True], state
        assert workers[0]["generation"] is None
        assert f"changed since generation {generation}" in workers[0]["last_reload_error"]
        assert workers[1]["generation"] == generation
        assert authz.check(check_request_json("GET", "/healthz")).status.code == 0  # worker 1 answers

        # Restored: every worker on one new generation, ready again.
        mark = authz.proc.mark()
        _write(policy, valid)
        authz.proc.wait_for("policy reloaded", since=mark)
        authz.proc.wait_for("worker 0 .*serving gRPC", since=mark)
        assert _same_generation(authz) > generation


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def test_workers_are_forked_from_one_preloaded_parent_and_a_restarted_one_too(tmp_path: Path) -> None:
    with Authz(_copy_policy(tmp_path), workers=2) as authz:
        generation = _same_generation(authz)
        _status, state = _readyz(authz)
        workers = state["workers"]
        assert isinstance(workers, list)
        pids = [int(w["pid"]) for w in workers]
        parents = {_parent(pid) for pid in pids}
        assert len(parents) == 1, parents
        server = parents.pop()
        assert server != authz.proc.popen.pid and _parent(server) == authz.proc.popen.pid
        cmdline = Path(f"/proc/{server}/cmdline").read_bytes().replace(b"\0", b" ")
        assert b"forkserver" in cmdline and b"authz.server.preload" in cmdline, cmdline
        # A worker that dies is forked again from the same parent, on the
        # supervisor's generation.
        mark = authz.proc.mark()
        os.kill(pids[0], signal.SIGKILL)
        authz.proc.wait_for("worker 0 .*serving gRPC", since=mark)
        assert _same_generation(authz) == generation
        _status, state = _readyz(authz)
        workers = state["workers"]
        assert isinstance(workers, list)
        again = int(workers[0]["pid"])
        assert again != pids[0] and _parent(again) == server
