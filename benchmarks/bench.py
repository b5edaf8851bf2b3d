"""The authz benchmark: peers compared in one run on one machine.

    scripts/bench [--quick] [--workers 2] [--duration 10] [--runs 3] [--tokens 1000000] [--sections ...]

Prints and writes (``benchmarks/out/results.md``) one table:

1. direct gRPC Check: a bare always-OK Python server vs authz with a realistic
   policy, cache hit (h2load) and cache miss with unique RS256 / ES256 tokens
   (``load.mjs``, since h2load repeats one body), same workers; 1 vs N workers;
2. end to end with wrk through a real Envoy: Envoy alone, Envoy with native
   jwt_authn + rbac (the same policy expressed natively), Envoy + bare Python
   ext_authz, Envoy + authz; RPS, p50, p99 and ratios;
3. p99 through Envoy at a fixed 3,000 requests/s (open loop);
4. RSS per worker after N unique tokens;
5. what telemetry costs a cached Check;
6. a cache miss in-process (``core_bench.py``): the server's Check with every
   cache missed, and the same figure scaled to the machine the targets were
   set on by how fast PyJWT's own RS256 decode runs on each;
7. the HTTP door (run right after 2, sharing its Envoy alone): wrk through the
   same edge Envoy to authz's gRPC door, its HTTP door
   (``--http-authz-address``) and bare granian (``bare_granian.py``), with
   Envoy's, the server's and wrk's CPU per request; authz's gRPC door
   directly against the bare grpcio server pinned one per core; p99 through
   Envoy at 26% of the HTTP door's capacity, HTTP door vs bare granian.

Before a figure is printed, the run is checked to have really decided: the
server's own counters (authz ``/metrics``, the bare server's count) and
Envoy's ext_authz / jwt_authn / rbac stats must account for the requests,
with no errors. Throughputs are the servers' counts over the duration (h2load
counts gRPC errors as successes). The machine is shared and noisy: compare
ratios within one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from authz.tools.envoy_config import EnvoyOptions, render  # noqa: E402
from benchmarks.bare_granian import listeners, wait_listening  # noqa: E402
from testkit import envoy_native  # noqa: E402
from testkit.paths import ACCEPTANCE  # noqa: E402
from testkit.procs import Authz, Proc, free_port, free_port_run, http_get  # noqa: E402
from testkit.requests import check_request_json  # noqa: E402
from testkit.tokens import claims, public_jwk, token  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
LOAD = ROOT / "benchmarks" / "load.mjs"
#: authz serve --http-authz-prefix, and Envoy's http_service path_prefix.
HTTP_PREFIX = "/authz"
#: The fixed-rate comparison of the HTTP door runs at this share of its capacity
#: (3,000 req/s of the 11,500 where the targets were set).
HTTP_RATE_SHARE = 0.26


# -- the realistic policy ---------------------------------------------------------

def write_policy(directory: Path) -> tuple[Path, Any]:
    """The contract policy plus an ES256 issuer; returns (file, ES256 key)."""
    for name in ("corp.jwks.json", "identity-es256.pem"):
        shutil.copy(ACCEPTANCE / name, directory / name)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (directory / "edge.jwks.json").write_text(json.dumps({"keys": [public_jwk(ec_key, kid="edge-1", alg="ES256")]}))
    text = (ACCEPTANCE / "policy.yaml").read_text().replace(
        "api_keys:",
        "  - name: edge\n    issuer: https://edge.example.com\n    audiences: [orders-api]\n"
        "    jwks_file: edge.jwks.json\n    algorithms: [ES256]\n    roles_claim: groups\n\napi_keys:", 1)
    path = directory / "policy.yaml"
    path.write_text(text)
    return path, ec_key


def check_body(bearer: str, index: int = 0) -> bytes:
    from google.protobuf import json_format

    from authz.wire.grpc import CheckRequest

    message = json_format.ParseDict(check_request_json(
        "GET", f"/api/orders/{index % 1000}",
        headers={"authorization": f"Bearer {bearer}", "x-tenant": "t1"}), CheckRequest())
    return message.SerializeToString()


def write_bodies(path: Path, bodies: list[bytes]) -> Path:
    with open(path, "wb") as handle:
        for body in bodies:
            handle.write(struct.pack(">I", len(body)) + body)
    return path


def grpc_frame_file(path: Path, body: bytes) -> Path:
    path.write_bytes(b"\x00" + struct.pack(">I", len(body)) + body)
    return path


def unique_tokens(count: int, alg: str, ec_key: Any) -> list[str]:
    """Tokens of distinct callers (subject and jti), so neither the token
    cache nor the identity-token reuse can help: the worst case."""
    now = int(time.time())
    if alg == "RS256":
        return [token(claims(sub=f"user-{i}", jti=f"rs-{i}", iat=now, exp=now + 3600)) for i in range(count)]
    return [token(claims(iss="https://edge.example.com", sub=f"user-{i}", jti=f"es-{i}", iat=now, exp=now + 3600),
                  key=ec_key, alg="ES256", kid="edge-1") for i in range(count)]


# -- measurement helpers ------------------------------------------------------------

@dataclass
class Row:
    section: str
    scenario: str
    rps: float | None = None
    p50: float | None = None
    p99: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def metrics(http: str) -> dict[str, float]:
    _s, _h, body = http_get(http + "/metrics")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def decided(m: dict[str, float], reason: str | None = None) -> float:
    return sum(v for k, v in m.items() if k.startswith("authz_decisions_total")
               and (reason is None or f'reason="{reason}"' in k))


def h2load(target: str, body_file: Path, duration: float, clients: int = 16, streams: int = 10) -> dict[str, Any]:
    run = subprocess.run(
        ["h2load", "-c", str(clients), "-m", str(streams), "-D", str(max(1, round(duration))), "-d", str(body_file),
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://{target}/envoy.service.auth.v3.Authorization/Check"],
        capture_output=True, text=True, timeout=duration + 60)
    succeeded = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", run.stdout)
    if not succeeded:
        raise RuntimeError("h2load failed:\n" + run.stdout + run.stderr)
    return {"succeeded": int(succeeded.group(1)), "failed": int(succeeded.group(2)) + int(succeeded.group(3))}


def node_load(*args: str, timeout: float) -> dict[str, Any]:
    run = subprocess.run(["node", str(LOAD), *args], capture_output=True, text=True, timeout=timeout)
    if run.returncode != 0:
        raise RuntimeError("load.mjs failed:\n" + run.stderr)
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


def wrk(url: str, duration: float, headers: dict[str, str], threads: int = 2, connections: int = 32) -> dict[str, Any]:
    args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    run = subprocess.run([*args, url], capture_output=True, text=True, timeout=duration + 60)
    out = run.stdout
    total = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)

    def pct(p: str) -> float | None:
        match = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if not match:
            return None
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    if not total or not rps:
        raise RuntimeError("wrk failed:\n" + out + run.stderr)
    return {"requests": int(total.group(1)), "rps": float(rps.group(1)),
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1) if errors else None, "p50": pct("50"), "p99": pct("99")}


def process_cpu() -> dict[int, float]:
    """CPU seconds (user + system, all threads) of every live process below
    this one: Envoy and the servers under test. The load generator is counted
    apart, once it has exited (``resource.RUSAGE_CHILDREN``)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    todo = [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as handle:
                    todo += [int(child) for child in handle.read().split()]
            if pid != os.getpid():
                with open(f"/proc/{pid}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                out[pid] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError):
            continue
    return out


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def cpu_per_request(runs: list[dict[str, Any]]) -> dict[str, float]:
    """The medians of :meth:`Bench.envoy_once`'s CPU µs per request."""
    return {key: value for key in ("envoy_cpu_us", "server_cpu_us", "load_cpu_us")
            if (value := median_of(runs, key)) is not None}


def cpu_note(cpu: dict[str, float]) -> str:
    if not cpu:
        return ""
    server = f", server {cpu['server_cpu_us']:.0f}" if cpu.get("server_cpu_us", 0) >= 0.5 else ""
    return f"CPU µs/request: Envoy {cpu['envoy_cpu_us']:.0f}{server}, wrk {cpu['load_cpu_us']:.0f}"


class Bare:
    """benchmarks/bare_server.py as a process; ``stop()`` returns its count."""

    def __init__(self, workers: int, mode: str = "sync", worker_ports: bool = False, pin: bool = False) -> None:
        self.port = free_port()
        self.worker_base = free_port_run(workers) if worker_ports else None
        args = [sys.executable, str(ROOT / "benchmarks" / "bare_server.py"), "--workers", str(workers),
                "--port", str(self.port), "--mode", mode]
        if self.worker_base is not None:
            args += ["--worker-ports", str(self.worker_base)]
        if pin:
            args.append("--pin")
        self.workers = workers
        self.proc = Proc(args, name="bare")
        for i in range(workers):
            self.proc.wait_for(f"worker {i} ready")

    @property
    def endpoints(self) -> list[str]:
        if self.worker_base is None:
            return [f"127.0.0.1:{self.port}"]
        return [f"127.0.0.1:{self.worker_base + i}" for i in range(self.workers)]

    def stop(self) -> int:
        self.proc.stop()
        # Workers print concurrently, so two reports can share a line.
        return sum(int(n) for n in re.findall(r"answered (\d+)", "\n".join(self.proc.lines)))


class BareGranian:
    """benchmarks/bare_granian.py as a process (embedded granian, the layout of
    authz's HTTP door); ``stop()`` returns its count."""

    def __init__(self, workers: int, server: str = "embed", pin: bool = False) -> None:
        self.port = free_port()
        self.proc = Proc([sys.executable, str(ROOT / "benchmarks" / "bare_granian.py"), "--workers", str(workers),
                          "--port", str(self.port), "--server", server,
                          *(["--pin"] if pin else [])], name="bare-granian")
        line = self.proc.wait_for(r"^(not )?ready")
        if not line.startswith("ready"):
            self.proc.stop()
            raise RuntimeError("bare_granian.py: " + self.proc.output())

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> int:
        self.proc.stop()
        return sum(int(n) for n in re.findall(r"answered (\d+)", "\n".join(self.proc.lines)))


def authz_auto_pins(workers: int) -> bool:
    """Whether ``authz serve --pin-workers auto`` pins ``workers`` workers here."""
    from authz.server.cpus import cgroup_cpu_limit, pinned_cpu

    return pinned_cpu("auto", 0, workers, limit=cgroup_cpu_limit()) is not None


def authz_flag(flag: str) -> bool:
    """Whether this authz's ``serve`` knows ``flag`` (e.g. ``--pin-workers``)."""
    run = subprocess.run([sys.executable, "-m", "authz", "serve", "--help"], capture_output=True, text=True, timeout=60)
    return flag in run.stdout


Start = Callable[[], tuple["EnvoyProc", int, Callable[[], dict[str, Any]]]]
Verify = Callable[[dict[str, Any], dict[str, int], dict[str, Any]], None]


class EnvoyProc:
    def __init__(self, config: dict[str, Any] | str, directory: Path, name: str) -> None:
        path = directory / f"envoy-{name}.yaml"
        path.write_text(config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False))
        self.proc = Proc(["envoy", "-c", str(path), "--disable-hot-restart", "--concurrency", "2", "-l", "warning",
                          "--base-id", str(os.getpid() % 60000 + free_port() % 1000)], name=f"envoy-{name}")
        self.admin: str = ""

    def wait(self, admin_port: int) -> None:
        self.admin = f"http://127.0.0.1:{admin_port}"
        for _ in range(300):
            try:
                if http_get(self.admin + "/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("envoy did not become ready:\n" + self.proc.output())

    def stats(self) -> dict[str, int]:
        _s, _h, body = http_get(self.admin + "/stats?format=json")
        return {s["name"]: int(s["value"]) for s in json.loads(body)["stats"] if "value" in s}

    def stop(self) -> None:
        self.proc.stop()


def envoy_for_authz(endpoints: list[str], directory: Path, name: str, protocol: str = "grpc") -> tuple[EnvoyProc, int]:
    """Envoy in the edge shape, the route answering 200 itself; ext_authz
    calls ``endpoints`` by gRPC, or (``protocol="http"``) by HTTP under
    :data:`HTTP_PREFIX`, authz's HTTP door or bare_granian.py."""
    listen, admin = free_port(), free_port()
    text = render(EnvoyOptions(shape="edge", authz=endpoints, listen=f"127.0.0.1:{listen}",
                               admin=f"127.0.0.1:{admin}", direct_response=True, timeout=1.0,
                               protocol=protocol, path_prefix=HTTP_PREFIX))
    envoy = EnvoyProc(text, directory, name)
    envoy.wait(admin)
    return envoy, listen


def envoy_alone(directory: Path, name: str) -> tuple[EnvoyProc, int]:
    """Envoy answering the route itself, with no authorization at all."""
    listen, admin = free_port(), free_port()
    envoy = EnvoyProc(envoy_native.config(listen, admin, native=False), directory, name)
    envoy.wait(admin)
    return envoy, listen


# -- the sections ------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="authz-bench-"))
        self.policy, self.ec_key = write_policy(self.tmp)
        self.rows: list[Row] = []
        self.bearer = token(claims(iat=int(time.time()), exp=int(time.time()) + 86400))
        self.hit_body = grpc_frame_file(self.tmp / "hit.grpc", check_body(self.bearer))
        self.headers = {"authorization": f"Bearer {self.bearer}", "x-tenant": "t1"}

    def say(self, text: str) -> None:
        print(text, flush=True)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        figures = " ".join(f"{k}={v:.3g}" for k, v in (("rps", row.rps), ("p50_ms", row.p50), ("p99_ms", row.p99))
                           if v is not None)
        self.say(f"  {row.section} | {row.scenario}: {figures} {row.note}")

    # 1. direct gRPC
    def direct(self) -> None:
        a = self.args
        self.say("== 1. direct gRPC Check")
        bare_runs = []
        for _ in range(a.runs):
            bare = Bare(a.workers)
            result = h2load(bare.endpoints[0], self.hit_body, a.duration)
            count = bare.stop()
            assert count >= result["succeeded"] * 0.99, "the bare server did not answer what h2load counted"
            bare_runs.append({"rps": count / a.duration})
        self.add(Row("direct", f"bare Python server, {a.workers} workers (h2load)", median_of(bare_runs, "rps")))
        for workers in sorted({1, a.workers}):
            runs = []
            for _ in range(a.runs):
                with Authz(self.policy, workers=workers) as authz:
                    authz.check(check_request_json("GET", "/api/orders/0", headers=self.headers))  # warm the cache
                    before = metrics(authz.http)
                    result = h2load(authz.grpc_address, self.hit_body, a.duration)
                    after = metrics(authz.http)
                count = decided(after, "allowed") - decided(before, "allowed")
                assert decided(after) - decided(before) == count, "not every answer was an allow"
                assert count >= result["succeeded"] * 0.99 and result["failed"] == 0, (count, result)
                hits = (after['authz_cache_requests_total{cache="decisions",outcome="hit"}']
                        - before['authz_cache_requests_total{cache="decisions",outcome="hit"}'])
                assert hits >= count * 0.99, "the cache-hit scenario missed the cache"
                runs.append({"rps": count / a.duration})
            self.add(Row("direct", f"authz cache hit, {workers} worker{'s' if workers > 1 else ''} (h2load)",
                         median_of(runs, "rps")))
        for alg in ("RS256", "ES256"):
            runs = []
            # One set per algorithm: every run starts a new authz, with empty caches.
            tokens = unique_tokens(a.miss_tokens, alg, self.ec_key)
            bodies = write_bodies(self.tmp / f"miss-{alg}.bin", [check_body(t, i) for i, t in enumerate(tokens)])
            for _run in range(a.runs):
                with Authz(self.policy, workers=a.workers) as authz:
                    before = metrics(authz.http)
                    result = node_load("grpc", "--target", authz.grpc_address, "--bodies", str(bodies),
                                       "--connections", "8", "--streams", "8", "--duration", str(a.duration),
                                       "--once", "1", timeout=a.duration + 120)
                    after = metrics(authz.http)
                count = decided(after, "allowed") - decided(before, "allowed")
                assert decided(after) - decided(before) == count, "not every answer was an allow"
                assert result["requests"] <= len(tokens), "a token was sent twice"
                token_hits = (after.get('authz_cache_requests_total{cache="tokens",outcome="hit"}', 0)
                              - before.get('authz_cache_requests_total{cache="tokens",outcome="hit"}', 0))
                assert token_hits == 0, "a unique-token run hit the token cache"
                runs.append({"rps": count / result["seconds"], "p50": result["p50_ms"], "p99": result["p99_ms"]})
            self.add(Row("direct", f"authz cache miss, unique {alg} tokens, {a.workers} workers (load.mjs)",
                         median_of(runs, "rps"), median_of(runs, "p50"), median_of(runs, "p99")))

    def envoy_once(self, start: Start, check: Verify, path: str = "/api/orders/1") -> dict[str, Any]:
        """One wrk run through the Envoy ``start`` brings up: every answer a
        2xx, and ``check`` given wrk's result, Envoy's stats over the run and
        what the server behind it counted."""
        envoy, listen, finish = start()
        try:
            try:
                before = envoy.stats()
                cpu_before, load_before = process_cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)
                result = wrk(f"http://127.0.0.1:{listen}{path}", self.args.duration, self.headers)
                cpu_after, load_after = process_cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)
                after = envoy.stats()
            finally:
                envoy.stop()
        finally:
            server = finish()
        assert result["non2xx"] == 0 and not result["socket_errors"], result
        # CPU per request: Envoy's, the server's (every other process below
        # this one), wrk's.
        envoy_pid, requests = envoy.proc.popen.pid, max(1, result["requests"])
        spent = {pid: cpu_after[pid] - cpu_before[pid] for pid in cpu_after if pid in cpu_before}
        result["envoy_cpu_us"] = spent.get(envoy_pid, 0.0) * 1e6 / requests
        result["server_cpu_us"] = sum(v for pid, v in spent.items() if pid != envoy_pid) * 1e6 / requests
        result["load_cpu_us"] = ((load_after.ru_utime + load_after.ru_stime)
                                 - (load_before.ru_utime + load_before.ru_stime)) * 1e6 / requests
        check(result, {k: after.get(k, 0) - before.get(k, 0) for k in after}, server)
        return result

    # 2. through Envoy
    def through_envoy(self) -> None:
        a = self.args
        self.say("== 2. end to end through Envoy (wrk)")
        path = "/api/orders/1"

        def run(name: str, start: Start, check: Verify) -> Row:
            runs = [self.envoy_once(start, check, path) for _ in range(a.runs)]
            row = Row("envoy", name, median_of(runs, "rps"), median_of(runs, "p50"), median_of(runs, "p99"),
                      extra=cpu_per_request(runs))
            self.add(row)
            return row

        def alone() -> tuple[EnvoyProc, int, Callable[[], dict[str, Any]]]:
            envoy, listen = envoy_alone(self.tmp, "alone")
            return envoy, listen, dict

        def native() -> tuple[EnvoyProc, int, Callable[[], dict[str, Any]]]:
            listen, admin = free_port(), free_port()
            envoy = EnvoyProc(envoy_native.config(listen, admin, native=True,
                                                  jwks=(ACCEPTANCE / "corp.jwks.json").read_text()), self.tmp, "native")
            envoy.wait(admin)
            return envoy, listen, dict

        def native_check(result: dict[str, Any], stats: dict[str, int], _server: dict[str, Any]) -> None:
            allowed = stats.get("http.ingress_http.rbac.allowed", 0)
            assert allowed >= result["requests"] * 0.99, ("rbac did not see the requests", allowed, result)
            assert stats.get("http.ingress_http.jwt_authn.allowed", 0) >= result["requests"] * 0.99

        def bare() -> tuple[EnvoyProc, int, Callable[[], dict[str, Any]]]:
            server = Bare(a.workers, worker_ports=True)
            envoy, listen = envoy_for_authz(server.endpoints, self.tmp, "bare")
            return envoy, listen, lambda: {"answered": server.stop()}

        def authz() -> tuple[EnvoyProc, int, Callable[[], dict[str, Any]]]:
            server = Authz(self.policy, workers=a.workers, worker_ports=True).__enter__()
            before = metrics(server.http)
            envoy, listen = envoy_for_authz(server.worker_addresses, self.tmp, "authz")

            def finish() -> dict[str, Any]:
                after = metrics(server.http)
                server.__exit__(None, None, None)
                return {"allowed": decided(after, "allowed") - decided(before, "allowed"),
                        "all": decided(after) - decided(before)}
            return envoy, listen, finish

        def ext_check(result: dict[str, Any], stats: dict[str, int], server: dict[str, Any]) -> None:
            ok = stats.get("http.ingress_http.ext_authz.ok", 0)
            assert ok >= result["requests"] * 0.99, ("ext_authz did not approve the requests", ok, result)
            assert stats.get("http.ingress_http.ext_authz.error", 0) == 0
            counted = server.get("allowed", server.get("answered", 0))
            assert counted >= ok * 0.99, ("the server did not count what Envoy got", counted, ok)
            if "all" in server:
                assert server["all"] == server["allowed"]

        base = run("Envoy alone (direct response)", alone, lambda r, s, _x: None)
        nat = run("Envoy + native jwt_authn + rbac (JWT cache on)", native, native_check)
        bare_row = run(f"Envoy + bare Python ext_authz, {a.workers} workers", bare, ext_check)
        authz_row = run(f"Envoy + authz, {a.workers} workers, cache hit", authz, ext_check)
        for row in (nat, bare_row, authz_row):
            if row.rps and base.rps:
                row.note = f"{row.rps / base.rps:.2f}x Envoy alone"
        if authz_row.rps and bare_row.rps:
            authz_row.extra["vs_bare"] = authz_row.rps / bare_row.rps
            authz_row.note += f"; {authz_row.rps / bare_row.rps:.2f}x bare ext_authz"

    # 7. the HTTP door
    def http_door(self) -> None:
        """The same edge Envoy (route answering 200 itself), wrk -c32, one
        valid token, the same request: Envoy alone, Envoy + authz's gRPC door
        (per-worker ports), Envoy + authz's HTTP door (one SO_REUSEPORT port),
        Envoy + bare granian; the runs of the three interleaved so a noisy
        neighbour hits them alike. Then authz's gRPC door directly against
        the bare grpcio server pinned one worker per core (h2load), and p99
        through Envoy at a fixed share of the HTTP door's capacity."""
        a = self.args
        w = a.workers
        self.say("== 7. the HTTP door (authz serve --http-authz-address) against the gRPC door and bare granian")
        # The benchmark policy's blocked-networks rule reads the source
        # address; the HTTP door knows it only from x-forwarded-for, which
        # the Envoy in front (use_remote_address) sets: one trusted hop.
        door = ["--http-authz-prefix", HTTP_PREFIX, "--trusted-forwarded-hops", "1"]
        # authz runs with its default --pin-workers auto through Envoy; bare
        # granian is pinned alike, so the two differ only in the deciding.
        pin = authz_flag("--pin-workers")
        auto_pins = pin and authz_auto_pins(w)
        layout = ("pinned: --pin-workers auto" if auto_pins else "unpinned: --pin-workers auto") if pin else "unpinned"

        def warm(listen: int) -> None:
            # One call through Envoy: the door answers, the decision is cached.
            status, _h, body = http_get(f"http://127.0.0.1:{listen}/api/orders/1", self.headers)
            assert status == 200, ("the warm-up call was not allowed", status, body)

        def authz_start(protocol: str) -> Start:
            def start() -> tuple[EnvoyProc, int, Callable[[], dict[str, Any]]]:
                http_port = free_port()
                extra = ["--http-authz-address", f"127.0.0.1:{http_port}", *door] if protocol == "http" else []
                server = Authz(self.policy, workers=w, worker_ports=protocol == "grpc", extra=extra).__enter__()
                envoy: EnvoyProc | None = None
                try:
                    if protocol == "http" and not wait_listening(http_port, w):
                        raise RuntimeError(f"authz's HTTP door: {listeners(http_port)} of {w} workers listening")
                    endpoints = server.worker_addresses if protocol == "grpc" else [f"127.0.0.1:{http_port}"]
                    envoy, listen = envoy_for_authz(endpoints, self.tmp, f"door-{protocol}", protocol=protocol)
                    warm(listen)
                    before = metrics(server.http)
                except BaseException:
                    if envoy is not None:
                        envoy.stop()
                    server.__exit__(None, None, None)
                    raise

                def finish() -> dict[str, Any]:
                    try:
                        after = metrics(server.http)
                    finally:
                        server.__exit__(None, None, None)
                    hit = 'authz_cache_requests_total{cache="decisions",outcome="hit"}'
                    return {"allowed": decided(after, "allowed") - decided(before, "allowed"),
                            "all": decided(after) - decided(before), "hits": after.get(hit, 0) - before.get(hit, 0)}
                return envoy, listen, finish
            return start

        def granian_start() -> tuple[EnvoyProc, int, Callable[[], dict[str, Any]]]:
            server = BareGranian(w, pin=auto_pins)
            try:
                envoy, listen = envoy_for_authz([server.address], self.tmp, "granian", protocol="http")
                warm(listen)
            except BaseException:
                server.stop()
                raise
            return envoy, listen, lambda: {"answered": server.stop()}

        def verify(result: dict[str, Any], stats: dict[str, int], server: dict[str, Any]) -> None:
            ok = stats.get("http.ingress_http.ext_authz.ok", 0)
            assert ok >= result["requests"] * 0.99, ("ext_authz did not approve the requests", ok, result)
            for bad in ("error", "denied", "failure_mode_allowed", "invalid"):
                assert stats.get(f"http.ingress_http.ext_authz.{bad}", 0) == 0, (bad, stats)
            counted = server.get("allowed", server.get("answered", 0))
            assert counted >= ok * 0.99, ("the server did not count what Envoy got", counted, ok)
            if "all" in server:  # authz: every decision an allow, from the decision cache
                assert server["all"] == server["allowed"], ("not every decision was an allow", server)
                assert server["hits"] >= server["allowed"] * 0.99, ("the cache-hit scenario missed the cache", server)
            result.update(ext_authz_ok=ok, counted=counted)

        alone = next((r for r in self.rows if r.section == "envoy" and r.scenario.startswith("Envoy alone")), None)
        if alone is None:
            def alone_start() -> tuple[EnvoyProc, int, Callable[[], dict[str, Any]]]:
                envoy, listen = envoy_alone(self.tmp, "alone")
                return envoy, listen, dict
            runs = [self.envoy_once(alone_start, lambda r, s, x: None) for _ in range(a.runs)]
            alone = Row("http", "Envoy alone (direct response)", median_of(runs, "rps"), median_of(runs, "p50"),
                        median_of(runs, "p99"), extra=cpu_per_request(runs))
            alone.note = cpu_note(alone.extra)
        else:
            alone = Row("http", alone.scenario, alone.rps, alone.p50, alone.p99, extra=dict(alone.extra),
                        note="; ".join(filter(None, ["the envoy section's row", cpu_note(alone.extra)])))
        self.add(alone)

        cases = {"grpc": authz_start("grpc"), "http": authz_start("http"), "granian": granian_start}
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
        for _ in range(a.runs):
            for name, start in cases.items():
                results[name].append(self.envoy_once(start, verify))

        def envoy_row(name: str, scenario: str) -> Row:
            runs = results[name]
            row = Row("http", scenario, median_of(runs, "rps"), median_of(runs, "p50"), median_of(runs, "p99"),
                      extra=cpu_per_request(runs))
            if row.rps and alone.rps:
                row.note = f"{row.rps / alone.rps:.2f}x Envoy alone"
            # What the run's verification saw, summed over the runs.
            row.extra.update(requests=sum(r["requests"] for r in runs), non2xx=sum(r["non2xx"] for r in runs),
                             ext_authz_ok=sum(r["ext_authz_ok"] for r in runs), counted=sum(r["counted"] for r in runs))
            who = "authz's allowed decisions" if name != "granian" else "granian's answers"
            row.extra["verified"] = (f"{row.extra['requests']:,} requests, {row.extra['non2xx']} non-2xx, "
                                     f"{row.extra['ext_authz_ok']:,} ext_authz.ok, {row.extra['counted']:,.0f} {who}")
            return row

        grpc_row = envoy_row("grpc", f"Envoy + authz gRPC door, {w} workers ({layout}; per-worker ports), cache hit")
        http_row = envoy_row("http",
                             f"Envoy + authz HTTP door, {w} workers ({layout}; one SO_REUSEPORT port), cache hit")
        granian_row = envoy_row("granian", f"Envoy + bare granian (bare_granian.py: 200, no decision), {w} workers "
                                           f"({'pinned' if auto_pins else 'unpinned'}, as authz)")
        if http_row.rps and grpc_row.rps and granian_row.rps:
            http_row.extra.update(vs_grpc=http_row.rps / grpc_row.rps, vs_granian=http_row.rps / granian_row.rps)
            http_row.note += (f"; {http_row.extra['vs_grpc']:.2f}x the gRPC door; "
                              f"{http_row.extra['vs_granian']:.2f}x bare granian")
        for row in (grpc_row, http_row, granian_row):
            row.note = "; ".join(filter(None, [row.note, row.extra["verified"], cpu_note(row.extra)]))
            self.add(row)

        # Directly (no Envoy): authz's gRPC door against the bare grpcio server,
        # the same workers, pinned one per core where each can be.
        pinned_runs: dict[str, list[dict[str, Any]]] = {"bare": [], "authz": []}
        for _ in range(a.runs):
            bare = Bare(w, pin=True)
            try:
                result = h2load(bare.endpoints[0], self.hit_body, a.duration)
            finally:
                answered = bare.stop()
            assert answered >= result["succeeded"] * 0.99 and result["failed"] == 0, (answered, result)
            pinned_runs["bare"].append({"rps": answered / a.duration})
            with Authz(self.policy, workers=w, extra=["--pin-workers", "on"] if pin else []) as authz:
                authz.check(check_request_json("GET", "/api/orders/0", headers=self.headers))  # warm the cache
                before = metrics(authz.http)
                result = h2load(authz.grpc_address, self.hit_body, a.duration)
                after = metrics(authz.http)
            count = decided(after, "allowed") - decided(before, "allowed")
            assert decided(after) - decided(before) == count, "not every answer was an allow"
            assert count >= result["succeeded"] * 0.99 and result["failed"] == 0, (count, result)
            pinned_runs["authz"].append({"rps": count / a.duration})
        bare_pinned = Row("http", f"direct: bare grpcio server (sync), {w} workers pinned one per core (h2load)",
                          median_of(pinned_runs["bare"], "rps"))
        authz_direct = Row("http", f"direct: authz gRPC door, cache hit, {w} workers "
                           + ("pinned one per core (--pin-workers on)" if pin
                              else "NOT pinned (this authz has no --pin-workers)") + " (h2load)",
                           median_of(pinned_runs["authz"], "rps"))
        authz_direct.extra = {"pinned": pin}
        if authz_direct.rps and bare_pinned.rps:
            authz_direct.extra["vs_bare_pinned"] = authz_direct.rps / bare_pinned.rps
            authz_direct.note = f"{authz_direct.rps / bare_pinned.rps:.2f}x the pinned bare server"
        self.add(bare_pinned)
        self.add(authz_direct)

        # p99 through Envoy, open loop, at a share of the HTTP door's capacity.
        if not http_row.rps:
            return
        rate = max(1, round(http_row.rps * HTTP_RATE_SHARE))

        def at_rate(start: Start) -> dict[str, Any]:
            envoy, listen, finish = start()
            try:
                try:
                    result = node_load("http", "--url", f"http://127.0.0.1:{listen}/api/orders/1", "--rate", str(rate),
                                       "--duration", str(a.duration), "--connections", "64",
                                       "--header", f"authorization: Bearer {self.bearer}", "--header", "x-tenant: t1",
                                       timeout=a.duration + 120)
                finally:
                    envoy.stop()
            finally:
                server = finish()
            assert result["failed"] == 0, result
            if "all" in server:
                assert server["all"] == server["allowed"] >= result["ok"], (server, result)
            return result

        def fixed_alone() -> tuple[EnvoyProc, int, Callable[[], dict[str, Any]]]:
            envoy, listen = envoy_alone(self.tmp, "fixed-alone")
            return envoy, listen, dict

        fixed: dict[str, list[dict[str, Any]]] = {"http": [], "granian": [], "alone": []}
        for _ in range(a.runs):
            fixed["http"].append(at_rate(cases["http"]))
            fixed["granian"].append(at_rate(cases["granian"]))
            fixed["alone"].append(at_rate(fixed_alone))
        share = f"{HTTP_RATE_SHARE:.0%} of the HTTP door's capacity through Envoy"
        for name, scenario in (("http", f"Envoy + authz HTTP door at {rate} req/s, {w} workers"),
                               ("granian", f"Envoy + bare granian at {rate} req/s, {w} workers"),
                               ("alone", f"(Envoy alone at {rate} req/s: the load generator's and Envoy's own floor)")):
            runs = fixed[name]
            self.add(Row("http", scenario, median_of(runs, "rps"), median_of(runs, "p50_ms"), median_of(runs, "p99_ms"),
                         note=share if name == "http" else "", extra={"fixed_rate": rate, "case": name}))

    # 3. fixed rate
    def fixed_rate(self) -> None:
        a = self.args
        rates = [a.rate]
        bare = next((r for r in self.rows if r.section == "envoy" and r.scenario.startswith("Envoy + bare")), None)
        if bare is not None and bare.rps:
            # 3,000 req/s was a quarter of capacity where the target was set;
            # on a slower machine it is not, so also measure at that share.
            share = round(bare.rps * a.rate / a.reference_capacity)
            if share < a.rate:
                rates.append(share)
        def at_rate(rate: int, endpoints: list[str] | None) -> dict[str, Any]:
            # endpoints None: Envoy alone, the floor of this load generator and Envoy here
            envoy, listen = envoy_alone(self.tmp, "fixed-alone") if endpoints is None else \
                envoy_for_authz(endpoints, self.tmp, "fixed")
            try:
                result = node_load("http", "--url", f"http://127.0.0.1:{listen}/api/orders/1", "--rate", str(rate),
                                   "--duration", str(a.duration), "--connections", "64",
                                   "--header", f"authorization: Bearer {self.bearer}", "--header", "x-tenant: t1",
                                   timeout=a.duration + 120)
            finally:
                envoy.stop()
            assert result["failed"] == 0, result
            return result

        for rate in rates:
            self.say(f"== 3. latency through Envoy at a fixed {rate} requests/s")
            runs, bare_runs, alone_runs = [], [], []
            for _ in range(a.runs):
                alone_runs.append(at_rate(rate, None))
                with Authz(self.policy, workers=a.workers, worker_ports=True) as server:
                    runs.append(at_rate(rate, server.worker_addresses))
                baseline = Bare(a.workers, worker_ports=True)
                try:
                    bare_runs.append(at_rate(rate, baseline.endpoints))
                finally:
                    baseline.stop()
            note = "" if rate == a.rate else (f"{rate / bare.rps:.0%} of Envoy + bare ext_authz capacity here, as "  # type: ignore[union-attr]
                                              f"{a.rate:,} req/s is of {a.reference_capacity:,.0f} where the target "
                                              "was set")
            self.add(Row("fixed", f"Envoy + authz at {rate} req/s, {a.workers} workers", median_of(runs, "rps"),
                         median_of(runs, "p50_ms"), median_of(runs, "p99_ms"), note=note))
            self.add(Row("fixed", f"(Envoy + bare Python ext_authz at {rate} req/s, for reference)",
                         median_of(bare_runs, "rps"),
                         median_of(bare_runs, "p50_ms"), median_of(bare_runs, "p99_ms")))
            self.add(Row("fixed", f"(Envoy alone at {rate} req/s: the load generator's and Envoy's own floor)",
                         median_of(alone_runs, "rps"), median_of(alone_runs, "p50_ms"),
                         median_of(alone_runs, "p99_ms")))

    # 4. memory
    def memory(self) -> None:
        a = self.args
        self.say(f"== 4. RSS of a worker after {a.tokens:,} unique tokens")
        run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory_probe.py"), "--tokens", str(a.tokens),
                              "--policy", str(self.policy)], capture_output=True, text=True, timeout=7200)
        if run.returncode != 0:
            raise RuntimeError(run.stderr)
        result = json.loads(run.stdout.strip().splitlines()[-1])
        row = Row("memory", f"one worker's decision path, {a.tokens:,} unique tokens", note=(
            f"RSS {result['rss_mb']:.0f} MB (peak {result['peak_rss_mb']:.0f} MB; {result['rss_start_mb']:.0f} MB at "
            f"start); cache entries: decisions {result['decision_entries']:,}, tokens {result['token_entries']:,}"))
        row.extra = result
        self.add(row)

    # 5. telemetry cost
    def telemetry(self) -> None:
        self.say("== 5. what telemetry costs a cached Check (in-process)")
        run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "hotpath_bench.py"), "--policy",
                              str(self.policy),
                              "--iterations", str(20000 if self.args.quick else 200000)],
                             capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            raise RuntimeError(run.stderr)
        result = json.loads(run.stdout.strip().splitlines()[-1])
        row = Row("telemetry", "cached Check, µs in-process", note=(
            f"{result['with_telemetry_us']:.2f} µs with metrics, {result['without_telemetry_us']:.2f} µs without "
            f"({result['telemetry_us']:.2f} µs of telemetry); {result['with_metadata_us']:.2f} µs with the policy's "
            f"metadata and client headers ({result['metadata_vs_without_metadata_pct']:+.1f} %); "
            f"{result['retained_allocations_per_hit']:.2f} blocks retained per hit"))
        row.extra = result
        self.add(row)

    # 6. the cache miss in-process
    def miss(self) -> None:
        self.say("== 6. a cache miss in-process (core_bench.py: the server's Check, every cache missed)")
        run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "core_bench.py"), "--json", "--policy",
                              str(self.policy),
                              "--key", str(ACCEPTANCE / "corp-signing-key.pem"), "--tokens",
                              str(300 if self.args.quick else 2000)],
                             capture_output=True, text=True, timeout=1200)
        if run.returncode != 0:
            raise RuntimeError(run.stdout + run.stderr)
        result = json.loads(run.stdout.strip().splitlines()[-1])
        scale = result["reference_pyjwt_us"] / result["pyjwt_decode_us"]
        for name, key in (("new caller", "check_new_us"), ("identity token reused", "check_reused_us")):
            row = Row("miss", f"Check in-process, every cache missed, RS256, {name}", rps=1e6 / result[key], note=(
                f"{result[key]:.0f} µs; {result[key] * scale:.0f} µs scaled by PyJWT's decode "
                f"({result['pyjwt_decode_us']:.0f} µs here, {result['reference_pyjwt_us']:.0f} where the target was "
                "set)"))
            row.extra = {**result, "caller": name, "us": result[key], "scaled_us": result[key] * scale}
            self.add(row)

    def table(self) -> str:
        a = self.args
        lines = [
            f"# authz benchmark, {datetime.date.today().isoformat()}",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, "
            f"Python {platform.python_version()}; workers {a.workers}, {a.duration:g} s per run, median of {a.runs} "
            f"run(s){' (quick mode)' if a.quick else ''}.",
            "",
            "| section | scenario | req/s | p50 ms | p99 ms | notes |",
            "|---|---|---:|---:|---:|---|",
        ]
        for row in self.rows:
            def fmt(value: float | None, digits: int = 0) -> str:
                return "" if value is None else f"{value:,.{digits}f}"
            lines.append(f"| {row.section} | {row.scenario} | {fmt(row.rps)} | {fmt(row.p50, 2)} | {fmt(row.p99, 2)} | "
                         f"{row.note} |")
        lines += ["", "## Targets", ""]
        lines += [f"- {line}" for line in self.targets()]
        return "\n".join(lines) + "\n"

    def targets(self) -> list[str]:
        def find(section: str, prefix: str) -> Row | None:
            return next((r for r in self.rows if r.section == section and r.scenario.startswith(prefix)), None)

        out = []
        w = self.args.workers
        bare = find("direct", "bare")
        hit = find("direct", f"authz cache hit, {w} worker")
        one = find("direct", "authz cache hit, 1 worker")
        if bare and hit and bare.rps and hit.rps:
            ratio = hit.rps / bare.rps
            out.append(f"Direct gRPC, cache hit: authz {ratio:.2f}x the bare Python server (target >= 0.80): "
                       f"{'met' if ratio >= 0.8 else 'NOT met'}")
        env_bare = find("envoy", "Envoy + bare")
        env_authz = find("envoy", "Envoy + authz")
        if env_bare and env_authz and env_bare.rps and env_authz.rps:
            ratio = env_authz.rps / env_bare.rps
            out.append(f"Through Envoy, cache hit: authz {ratio:.2f}x Envoy + bare ext_authz (target >= 0.85): "
                       f"{'met' if ratio >= 0.85 else 'NOT met'}")
        for fixed in (r for r in self.rows if r.section == "fixed" and r.scenario.startswith("Envoy + authz")):
            if fixed.p99 is not None:
                rate = fixed.scenario.split(" at ")[1].split(",")[0]
                scaled = f" ({fixed.note})" if fixed.note else ""
                out.append(f"p99 through Envoy at {rate}{scaled}: {fixed.p99:.2f} ms (target < 5 ms): "
                           f"{'met' if fixed.p99 < 5 else 'NOT met'}")
        miss = find("direct", "authz cache miss, unique RS256")
        if miss and miss.rps:
            per = 1e6 * w / miss.rps
            out.append(f"Cache miss through gRPC, RS256 with a role and a CEL rule: {per:.0f} µs of worker time per "
                       f"decision ({w} workers at {miss.rps:,.0f}/s)")
        for row in (r for r in self.rows if r.section == "miss"):
            us, scaled = row.extra["us"], row.extra["scaled_us"]
            out.append(f"Cache miss in-process, {row.extra['caller']}: {us:.0f} µs here "
                       f"({'met' if us <= 150 else 'NOT met'} as an absolute), "
                       f"{scaled:.0f} µs scaled to the targets' machine by PyJWT's decode (target <= 150 µs): "
                       f"{'met' if scaled <= 150 else 'NOT met'}")
        memory = find("memory", "one worker")
        if memory:
            rss = memory.extra["rss_mb"]
            out.append(f"Memory: {rss:.0f} MB RSS after {self.args.tokens:,} unique tokens (target < 300 MB): "
                       f"{'met' if rss < 300 else 'NOT met'}")
        if one and hit and one.rps and hit.rps and w > 1:
            ratio = hit.rps / one.rps
            out.append(f"Scaling: {w} workers give {ratio:.2f}x one (target >= 1.7): "
                       f"{'met' if ratio >= 1.7 else 'NOT met'}")
        out += self.http_targets()
        telemetry = find("telemetry", "cached")
        if telemetry and hit and hit.rps:
            cost = telemetry.extra["telemetry_us"]
            share = max(0.0, cost) / (1e6 * w / hit.rps)
            shown = f"{cost:.2f} µs" if cost > 0 else f"no measurable cost ({cost:+.2f} µs, within noise)"
            out.append(f"Telemetry on the cached hot path: {shown} of the {1e6 * w / hit.rps:.0f} µs "
                       f"of worker time per Check = {share:.1%} of throughput (target <= 10%): "
                       f"{'met' if share <= 0.10 else 'NOT met'}")
        return out


    def http_targets(self) -> list[str]:
        """The HTTP door's targets (section 7)."""
        def find(prefix: str) -> Row | None:
            return next((r for r in self.rows if r.section == "http" and r.scenario.startswith(prefix)), None)

        def verdict(ok: bool) -> str:
            return "met" if ok else "NOT met"

        out = []
        grpc, http = find("Envoy + authz gRPC door, "), find("Envoy + authz HTTP door, ")
        granian = find("Envoy + bare granian (")
        if grpc and http and grpc.rps and http.rps:
            ratio = http.rps / grpc.rps
            out.append(f"HTTP door through Envoy: {ratio:.2f}x the gRPC door ({http.rps:,.0f} vs {grpc.rps:,.0f} "
                       "req/s; "
                       f"target >= 2.0): {verdict(ratio >= 2.0)}")
        if granian and http and granian.rps and http.rps:
            ratio = http.rps / granian.rps
            out.append(f"HTTP door through Envoy: {ratio:.2f}x bare granian ({http.rps:,.0f} vs {granian.rps:,.0f} "
                       "req/s; "
                       f"target >= 0.8): {verdict(ratio >= 0.8)}")
        bare, direct = find("direct: bare grpcio"), find("direct: authz gRPC door")
        if bare and direct and bare.rps and direct.rps:
            ratio = direct.rps / bare.rps
            pinned = "pinned" if direct.extra.get("pinned") else "unpinned: no --pin-workers in this authz"
            out.append(f"Direct gRPC, cache hit: authz ({pinned}) {ratio:.2f}x the bare grpcio server pinned one per "
                       "core "
                       f"({direct.rps:,.0f} vs {bare.rps:,.0f} Checks/s; target >= 0.8): {verdict(ratio >= 0.8)}")
        door_fixed, granian_fixed = find("Envoy + authz HTTP door at "), find("Envoy + bare granian at ")
        if door_fixed and granian_fixed and door_fixed.p99 is not None and granian_fixed.p99 is not None:
            gap = door_fixed.p99 - granian_fixed.p99
            out.append(f"p99 through Envoy at {door_fixed.extra['fixed_rate']} req/s ({HTTP_RATE_SHARE:.0%} of the "
                       "HTTP door's "
                       f"capacity): HTTP door {door_fixed.p99:.2f} ms, bare granian {granian_fixed.p99:.2f} ms, "
                       f"{gap:+.2f} ms (target: within 2 ms of bare granian): {verdict(gap <= 2.0)}")
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description="authz benchmark (see the module docstring)")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: short, one run, few tokens")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=3000)
    parser.add_argument("--reference-capacity", type=float, default=11500.0,
                        help="Envoy + bare Python ext_authz req/s on the machine the 3,000 req/s target was set on "
                             "(the issue's measurement); the fixed-rate section also runs at the same share of this "
                             "machine's capacity")
    parser.add_argument("--tokens", type=int, default=1_000_000, help="unique tokens for the memory section")
    parser.add_argument("--miss-tokens", type=int, default=60_000, help="unique tokens per cache-miss run")
    parser.add_argument("--sections", default="direct,envoy,http,fixed,memory,telemetry,miss",
                        help="which sections, in this order (http: the HTTP door, section 7, right after envoy "
                             "so it shares its Envoy alone)")
    parser.add_argument("--out", default=str(OUT / "results.md"))
    args = parser.parse_args()
    if args.quick:
        args.duration, args.runs, args.tokens, args.miss_tokens, args.rate = 1.0, 1, 2000, 4000, 300
    for tool in ("h2load", "wrk", "node", "envoy"):
        if shutil.which(tool) is None:
            print(f"missing tool: {tool} (Debian: nghttp2-client for h2load, wrk; Node.js; envoy from the dev extra)",
                  file=sys.stderr)
            return 2
    bench = Bench(args)
    sections = {"direct": bench.direct, "envoy": bench.through_envoy, "fixed": bench.fixed_rate,
                "memory": bench.memory, "telemetry": bench.telemetry, "miss": bench.miss, "http": bench.http_door}
    for name in args.sections.split(","):
        sections[name]()
    table = bench.table()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print()
    print(table)
    print(f"(written to {out})")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
