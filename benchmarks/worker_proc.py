"""What the black-box benchmarks share: a running ``authz serve``, its
workers' pids, their CPU and memory read from ``/proc``, and requests sent
as prebuilt bytes on the gRPC door, or as Envoy's HTTP ext_authz calls on
the HTTP door.

The worker pids come from ``/readyz`` (each worker reports its own), so the
figures are the same whichever way the supervisor starts its workers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from authz.wire.grpc import CheckRequest  # noqa: E402
from testkit.procs import Authz, http_get  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
METHOD = "/envoy.service.auth.v3.Authorization/Check"
HS_SECRET = b"worker-bench-secret-0123456789abcdef"


def worker_pids(authz: Authz) -> list[int]:
    _status, _headers, body = http_get(authz.http + "/readyz")
    return [int(w["pid"]) for w in json.loads(body)["workers"]]


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as handle:
        return int(handle.read().split()[1]) * PAGE / 1e6


def pss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1e3
    raise RuntimeError(f"no Pss in /proc/{pid}/smaps_rollup")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def check_bytes(token: str, index: int, path: str = "/api/orders") -> bytes:
    """A CheckRequest as Envoy sends it for ``GET path`` with ``token``."""
    message = CheckRequest()
    attributes = message.attributes
    attributes.source.address.socket_address.address = "198.51.100.7"
    attributes.source.address.socket_address.port_value = 40000
    attributes.destination.address.socket_address.address = "10.0.0.12"
    attributes.destination.address.socket_address.port_value = 8080
    http = attributes.request.http
    http.method, http.path, http.host, http.scheme, http.protocol = "GET", path, "api.example.com", "https", "HTTP/1.1"
    http.headers.update({
        ":authority": "api.example.com", ":method": "GET", ":path": path, ":scheme": "https",
        "authorization": f"Bearer {token}", "x-tenant": "t1", "x-request-id": f"req-{index}",
        "user-agent": "bench/1.0", "accept": "application/json",
    })
    return message.SerializeToString()


#: The path prefix the HTTP door is served under in the benchmarks (``--http-authz-prefix``).
HTTP_PREFIX = "/authz"


def http_call(token: str, index: int, path: str = "/api/orders") -> tuple[str, dict[str, str]]:
    """The HTTP ext_authz call Envoy makes for the request of
    :func:`check_bytes` (one trusted hop: the client's address in
    ``x-forwarded-for``, as Envoy's ``use_remote_address`` sets it)."""
    return HTTP_PREFIX + path, {
        "host": "api.example.com", "authorization": f"Bearer {token}", "x-tenant": "t1",
        "x-request-id": f"req-{index}", "user-agent": "bench/1.0", "accept": "application/json",
        "x-forwarded-for": "198.51.100.7", "x-forwarded-proto": "https", "content-length": "0",
    }


def hs256_policy(source: Path, directory: Path) -> Path:
    """A copy of ``source`` (and its files) with an HS256 issuer added, whose
    tokens mint in microseconds: what a worker keeps per caller (a digest,
    the identity, the prepared answer) does not depend on the algorithm."""
    for item in source.parent.iterdir():
        if item.is_file():
            shutil.copy(item, directory / item.name)
    jwks = {"keys": [{"kty": "oct", "kid": "bench", "alg": "HS256", "k": b64(HS_SECRET)}]}
    (directory / "bench.jwks.json").write_text(json.dumps(jwks))
    text = source.read_text().replace(
        "api_keys:",
        "  - name: bench\n    issuer: https://bench.example.com\n    audiences: [orders-api]\n"
        "    jwks_file: bench.jwks.json\n    algorithms: [HS256]\n    roles_claim: groups\n\napi_keys:", 1)
    (directory / "policy.yaml").write_text(text)
    return directory / "policy.yaml"


def hs256_tokens(start: int, count: int, now: int) -> Iterator[str]:
    header = b64(json.dumps({"alg": "HS256", "kid": "bench", "typ": "JWT"}).encode())
    for i in range(start, start + count):
        claims = {"iss": "https://bench.example.com", "aud": "orders-api", "sub": f"user-{i}", "iat": now,
                  "exp": now + 3600, "groups": ["orders-reader"], "tenant": "t1", "jti": f"bench-{i}"}
        signing_input = f"{header}.{b64(json.dumps(claims, separators=(',', ':')).encode())}"
        yield f"{signing_input}.{b64(hmac.new(HS_SECRET, signing_input.encode(), hashlib.sha256).digest())}"


class Sender:
    """Prebuilt CheckRequest bytes to one address, ``window`` in flight."""

    def __init__(self, address: str, window: int = 16) -> None:
        self.channel = grpc.insecure_channel(address)
        self.call = self.channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        self.window = window

    def send(self, requests: Iterable[bytes]) -> int:
        """Send every request; the number answered OK (status code 0)."""
        from authz.wire.grpc import CheckResponse

        allowed = 0
        pending: list[grpc.Future] = []

        def drain(limit: int) -> None:
            nonlocal allowed
            while len(pending) > limit:
                answer = CheckResponse.FromString(pending.pop(0).result(timeout=30))
                allowed += answer.status.code == 0

        for raw in requests:
            pending.append(self.call.future(raw, timeout=30))
            drain(self.window - 1)
        drain(0)
        return allowed

    def close(self) -> None:
        self.channel.close()


class HttpSender:
    """Prebuilt HTTP ext_authz calls (:func:`http_call`) to the HTTP door at
    ``address``, ``window`` in flight, each on a kept-alive connection of
    its own (as Envoy keeps its connections to the door)."""

    def __init__(self, address: str, window: int = 16) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port = host, int(port)
        self.pool = ThreadPoolExecutor(window)
        self.local = threading.local()
        self.connections: list[http.client.HTTPConnection] = []

    def _one(self, call: tuple[str, dict[str, str]]) -> bool:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = self.local.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
            self.connections.append(connection)
        path, headers = call
        connection.request("GET", path, headers=headers)
        answer = connection.getresponse()
        answer.read()
        return answer.status == 200

    def send(self, calls: Iterable[tuple[str, dict[str, str]]]) -> int:
        """Send every call; the number answered 200 (allowed)."""
        return sum(self.pool.map(self._one, calls))

    def close(self) -> None:
        self.pool.shutdown()
        for connection in self.connections:
            connection.close()


def settle(pid: int, seconds: float = 0.5) -> None:
    """Wait until the worker's CPU stops moving (its last answers logged)."""
    last = cpu_seconds(pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(seconds)
        now = cpu_seconds(pid)
        if now == last:
            return
        last = now
