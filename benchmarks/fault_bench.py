"""Faults under load: what a SIGKILLed worker, a valid reload and an invalid
reload cost through Envoy, for each routing measure of the generated config
(authz.tools.envoy_resilience) on its own and together.

    .venv/bin/python benchmarks/fault_bench.py [--doors grpc,http] [--duration 12] [--variants none,shipped]

Per door and variant: ``authz serve --workers 2`` (``grpc``: each worker's
own port an endpoint of Envoy's cluster, as the operator's edge setup;
``grpc-shared``: the one shared gRPC port, as deploy/envoy/edge.yaml and a
Kubernetes Service give it; ``http``: the HTTP door's one shared port), an
edge Envoy from
``authz envoy-config`` whose route answers 200 itself, and two wrk load
streams at once, a valid token (``-c16``) and a forged one (``-c4``, signed
by a key the issuer never published). Each event runs in its own window of
``--duration`` seconds and happens ``--event-at`` seconds in: the window of
the kill holds the worker's restart. Printed per window: valid requests and
how many were not a 200 (the loss), forged requests and how many were
allowed (must be 0), and Envoy's counters over the window (ext_authz
errors, connect failures, retries and retry overflows, ejections).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from authz.tools import envoy_resilience as resilience  # noqa: E402
from authz.tools.envoy_config import EnvoyOptions, render  # noqa: E402
from benchmarks.bench import EnvoyProc, wrk  # noqa: E402
from testkit.paths import ACCEPTANCE  # noqa: E402
from testkit.procs import Authz, free_port, http_get, wait_listening  # noqa: E402
from testkit.tokens import claims, rsa_key, token  # noqa: E402

PREFIX = "/authz"
VARIANTS: dict[str, tuple[str, ...]] = {
    "none": (),
    "health-check": (resilience.HEALTH_CHECK,),
    "outlier-detection": (resilience.OUTLIER_DETECTION,),
    "retry": (resilience.RETRY,),
    "retry+circuit-breakers": (resilience.RETRY, resilience.CIRCUIT_BREAKERS),
    "retry+circuit-breakers+outlier": (resilience.RETRY, resilience.CIRCUIT_BREAKERS, resilience.OUTLIER_DETECTION),
    "shipped": resilience.MEASURES,
}
#: Envoy's counters printed per window (their names after the listener's or cluster's prefix).
COUNTERS = {
    "ext_authz errors": "http.ingress_http.ext_authz.error",
    "connect fail": "cluster.authz.upstream_cx_connect_fail",
    "retries": "cluster.authz.upstream_rq_retry",
    "retry overflow": "cluster.authz.upstream_rq_retry_overflow",
    "ejections": "cluster.authz.outlier_detection.ejections_enforced_total",
}


def write_policy(directory: Path) -> Path:
    for name in ("policy.yaml", "corp.jwks.json", "identity-es256.pem"):
        shutil.copy(ACCEPTANCE / name, directory / name)
    return directory / "policy.yaml"


def replace_file(path: Path, text: str) -> None:
    """Atomically, as editors and Kubernetes volume updates do."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def readyz(authz: Authz) -> dict[str, Any]:
    return dict(json.loads(http_get(authz.http + "/readyz")[2]))


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not within {timeout}s")


class Stack:
    """authz, and Envoy configured with some of the measures."""

    def __init__(self, tmp: Path, door: str, measures: tuple[str, ...]) -> None:
        self.policy = write_policy(tmp)
        self.original = self.policy.read_text()
        if door == "grpc":
            self.authz = Authz(self.policy, workers=2, worker_ports=True)
            endpoints = self.authz.worker_addresses
        elif door == "grpc-shared":
            self.authz = Authz(self.policy, workers=2)
            endpoints = [self.authz.grpc_address]
        else:
            address = f"127.0.0.1:{free_port()}"
            self.authz = Authz(self.policy, workers=2, extra=["--http-authz-address", address, "--http-authz-prefix",
                                                              PREFIX, "--trusted-forwarded-hops", "1"])
            endpoints = [address]
        self.authz.__enter__()
        listen, admin = free_port(), free_port()
        text = render(EnvoyOptions(shape="edge", authz=endpoints, listen=f"127.0.0.1:{listen}",
                                   admin=f"127.0.0.1:{admin}",
                                   direct_response=True, protocol="http" if door == "http" else "grpc",
                                   path_prefix=PREFIX, resilience=measures))
        self.envoy = EnvoyProc(text, tmp, f"faults-{door}")
        self.envoy.wait(admin)
        wait_listening(listen, self.envoy.proc)
        self.url = f"http://127.0.0.1:{listen}/api/orders/1"

    def close(self) -> None:
        self.envoy.stop()
        self.authz.__exit__(None, None, None)

    # -- the events --------------------------------------------------------------

    def kill(self) -> None:
        before = readyz(self.authz)["workers"][0]["pid"]
        os.kill(before, signal.SIGKILL)

        def back() -> bool:
            state = readyz(self.authz)
            return bool(state["ready"]) and state["workers"][0]["pid"] not in (None, before)

        wait_until(back, 30, "the killed worker is back")

    def reload_valid(self) -> None:
        mark = self.authz.proc.mark()
        text = self.original.replace("{methods: [GET, HEAD], paths", "{methods: [GET, HEAD, POST], paths")
        replace_file(self.policy, text if self.policy.read_text() != text else self.original)
        self.authz.proc.wait_for("policy reloaded", since=mark, timeout=30)

    def reload_invalid(self) -> None:
        mark = self.authz.proc.mark()
        replace_file(self.policy, self.original.replace("version: 1", "version: 2"))
        self.authz.proc.wait_for("policy reload failed", since=mark, timeout=30)

    def restore(self) -> None:
        if self.policy.read_text() != self.original:
            mark = self.authz.proc.mark()
            replace_file(self.policy, self.original)
            self.authz.proc.wait_for("policy reloaded", since=mark, timeout=30)


def window(stack: Stack, event: Callable[[], None], args: argparse.Namespace, valid: str,
           forged: str) -> dict[str, Any]:
    """Both load streams for ``args.duration`` s, ``event`` at ``args.event_at`` s."""
    before = stack.envoy.stats()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        good = pool.submit(wrk, stack.url, args.duration, {"authorization": f"Bearer {valid}", "x-tenant": "t1"},
                           1, args.connections)
        bad = pool.submit(wrk, stack.url, args.duration, {"authorization": f"Bearer {forged}", "x-tenant": "t1"}, 1, 4)
        time.sleep(args.event_at)  # into the window: the load is running
        event()
        good_result, bad_result = good.result(), bad.result()
    after = stack.envoy.stats()
    broken = socket_errors(good_result["socket_errors"])  # no answer at all
    lost = good_result["non2xx"] + broken
    return {
        "valid": good_result["requests"] + broken, "lost": lost,
        "loss": 100.0 * lost / max(1, good_result["requests"] + broken),
        "forged": bad_result["requests"], "forged_allowed": bad_result["requests"] - bad_result["non2xx"],
        **{name: after.get(key, 0) - before.get(key, 0) for name, key in COUNTERS.items()},
    }


def socket_errors(text: str | None) -> int:
    """The sum of wrk's ``Socket errors: connect 0, read 0, write 0, timeout 0``."""
    if not text:
        return 0
    return sum(int(part.split()[-1]) for part in text.split(","))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doors", default="grpc,grpc-shared,http")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"from {', '.join(VARIANTS)}")
    parser.add_argument("--events", default="kill,reload-valid,reload-invalid")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per window")
    parser.add_argument("--event-at", type=float, default=3.0, help="seconds into the window")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections of the valid stream")
    args = parser.parse_args()
    now = int(time.time())
    valid = token(claims(iat=now, exp=now + 86400))
    forged = token(claims(iat=now, exp=now + 86400), key=rsa_key("forged"))
    header = f"| door | variant | event | valid | lost | loss % | forged | forged allowed | {' | '.join(COUNTERS)} |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for door in args.doors.split(","):
        for name in args.variants.split(","):
            if door != "grpc" and name == "health-check":
                continue  # none on the HTTP door; one shared port cannot tell a worker from another
            stack = Stack(Path(tempfile.mkdtemp(prefix="authz-faults-")), door, VARIANTS[name])
            try:
                events = {"kill": stack.kill, "reload-valid": stack.reload_valid,
                          "reload-invalid": stack.reload_invalid}
                for event in args.events.split(","):
                    row = window(stack, events[event], args, valid, forged)
                    stack.restore()
                    counters = " | ".join(str(row[c]) for c in COUNTERS)
                    print(f"| {door} | {name} | {event} | {row['valid']} | {row['lost']} | {row['loss']:.2f} | "
                          f"{row['forged']} | {row['forged_allowed']} | {counters} |", flush=True)
            finally:
                stack.close()
    return 0


if __name__ == "__main__":
    # Stopped by a signal, still stop what it started (the finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
