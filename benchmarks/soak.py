"""The soak: authz behind Envoy at a steady share of its capacity for a long time.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--rate R] [--workers 2] [--warmup M]

Starts a key-set server (testkit's FakeIdP, ES256 keys), ``authz serve
--workers N --worker-ports`` on a policy whose issuer reads that key set, and
Envoy configured as ``authz envoy-config --shape edge`` configures it (each
worker's port an endpoint; the route answers 200 itself, so only the
authorization step is under load). Then:

1. capacity: a closed loop of the same request mix for ``--probe`` seconds
   (skipped with ``--rate``); the soak runs at ``--share`` (80 %) of it;
2. an open loop at that fixed rate (latency from each request's scheduled
   start) for ``--minutes``, from a separate process: cache hits (a few
   repeated valid tokens), cache misses (a new token for every request,
   minted as it is sent), denials (tokens signed by a key the issuer never
   published, and expired ones);
3. a key rotation midway: the key-set server publishes a new key beside the
   old one, every token is signed with the new key from then on, and the old
   key leaves the set ``--overlap`` seconds later;
4. every ``--rss-every`` seconds, each worker's RSS (``VmRSS`` of the pids
   ``/readyz`` lists).

Prints one line per interval (requests, p50/p99/max, outcomes that were not
the expected ones by class, RSS per worker); then the CPU each process used,
Envoy's ext_authz counters, authz's decisions and cache lookups, and a
verdict: RSS growth after the warm-up (goal < 10 %) and unexpected outcomes
(goal 0). A valid token is expected to get 200, a forged or expired one 401.
benchmarks/README.md ("The soak") says more.

The policy's caches are sized from the rate so that they fill during the
warm-up: growth after it is then a leak, not a cache filling up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import queue
import random
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from testkit.tokens import public_jwk, token  # noqa: E402

if TYPE_CHECKING:
    from testkit.idp import FakeIdP
    from testkit.procs import Authz, Envoy

POLICY = """\
version: 1
issuers:
  - name: soak
    issuer: {issuer}
    audiences: [orders-api]
    jwks_uri: {issuer}/jwks
    algorithms: [ES256]
    roles_claim: roles
    jwks: {{refresh_interval: 30s, min_refetch_interval: 30s}}
roles:
  reader:
    - {{methods: [GET], paths: ["/api/**"]}}
rules:
  - name: tenant-isolation
    effect: deny
    paths: ["/api/**"]
    when: 'identity.kind == "jwt" && request.headers["x-tenant"] != identity.claims.tenant'
response:
  headers:
    x-user-id: identity.subject
  remove: [authorization]
  identity_token: {{header: x-identity-token, issuer: https://authz.example.internal, audience: internal,
                   ttl: 60s, signing_key: {identity_key}}}
cache:
  decisions: {{max_entries: {decisions}, ttl: 30s}}
  tokens: {{max_entries: {tokens}}}
"""

KINDS = ("hit", "miss", "forged", "expired")
EXPECTED = {"hit": 200, "miss": 200, "forged": 401, "expired": 401}
HITS = 8  # repeated valid tokens per key


# -- the load generator (its own process) --------------------------------------------

class Minter:
    """Tokens for each key generation: the repeated ones minted up front,
    a new one for every cache miss."""

    def __init__(self, issuer: str, keys: list[tuple[str, bytes]], lifetime: float) -> None:
        self.issuer = issuer
        self.keys = [(kid, serialization.load_pem_private_key(pem, None)) for kid, pem in keys]
        self.attacker = ec.generate_private_key(ec.SECP256R1())
        self.exp = int(time.time() + lifetime)
        self.count = 0
        self.fixed = [self._fixed(generation) for generation in range(len(self.keys))]

    def claims(self, subject: str, exp: int) -> dict[str, Any]:
        return {"iss": self.issuer, "aud": "orders-api", "sub": subject, "exp": exp, "iat": int(time.time()) - 5,
                "roles": ["reader"], "tenant": "t1", "jti": f"{subject}-{self.count}"}

    def _fixed(self, generation: int) -> dict[str, list[str]]:
        kid, key = self.keys[generation]
        return {
            "hit": [token(self.claims(f"hit-{i}", self.exp), key=key, alg="ES256", kid=kid) for i in range(HITS)],
            "forged": [token(self.claims(f"forged-{i}", self.exp), key=self.attacker, alg="ES256", kid=kid)
                       for i in range(4)],
            "expired": [token(self.claims(f"expired-{i}", int(time.time()) - 3600), key=key, alg="ES256", kid=kid)
                        for i in range(4)],
        }

    def token(self, kind: str, generation: int, rng: random.Random) -> str:
        if kind != "miss":
            return rng.choice(self.fixed[generation][kind])
        self.count += 1
        kid, key = self.keys[generation]
        return token(self.claims(f"user-{self.count}", self.exp), key=key, alg="ES256", kid=kid)


class Interval:
    """What one interval of scheduled requests got."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.outcomes: Counter[str] = Counter()
        self.sent = 0

    def summary(self, index: int, seconds: float) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2) if ordered else None

        return {"index": index, "seconds": seconds, "sent": self.sent, "answered": len(ordered), "p50_ms": pct(0.5),
                "p99_ms": pct(0.99), "max_ms": round(ordered[-1] * 1000, 2) if ordered else None,
                "outcomes": dict(self.outcomes)}


async def _send(session: Any, url: str, kind: str, bearer: str, generation: int) -> str:
    """One request; its outcome class: ``ok`` when the status is the one
    expected for its kind, else what came instead."""
    import aiohttp

    try:
        async with session.get(url, headers={"authorization": f"Bearer {bearer}", "x-tenant": "t1"}) as response:
            body = await response.read()
            if response.status == EXPECTED[kind]:
                return f"ok:{generation}"
            try:
                reason = json.loads(body).get("reason", "")
            except ValueError:
                reason = "no JSON body"
            return f"{kind} got {response.status} {reason}".rstrip()
    except TimeoutError:
        return f"{kind}: client timeout"
    except aiohttp.ClientError as error:
        return f"{kind}: {type(error).__name__}"


def _kind(rng: random.Random, mix: dict[str, float]) -> str:
    return rng.choices(KINDS, weights=[mix[k] for k in KINDS])[0]


async def _load(config: dict[str, Any], generation: Any, results: Any) -> None:
    import aiohttp

    rng = random.Random(1)
    minter = Minter(config["issuer"], config["keys"], config["lifetime"])
    results.put({"ready": True})
    connector = aiohttp.TCPConnector(limit=config["connections"])
    timeout = aiohttp.ClientTimeout(total=config["timeout"])
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if config.get("rate") is None:  # the closed-loop capacity probe
            outcomes: Counter[str] = Counter()
            end = loop.time() + config["seconds"]

            async def lane() -> None:
                while loop.time() < end:
                    kind = _kind(rng, config["mix"])
                    gen = generation.value
                    outcomes[await _send(session, config["url"], kind, minter.token(kind, gen, rng), gen)] += 1

            began = loop.time()
            await asyncio.gather(*(lane() for _ in range(config["connections"])))
            results.put({"probe": dict(outcomes), "seconds": loop.time() - began})
            return
        rate, interval, total = config["rate"], config["interval"], config["seconds"]
        buckets: dict[int, Interval] = {}
        pending: set[asyncio.Task[None]] = set()
        start = loop.time()

        async def one(index: int, scheduled: float, kind: str, bearer: str, gen: int) -> None:
            outcome = await _send(session, config["url"], kind, bearer, gen)
            bucket = buckets[index]
            bucket.outcomes[outcome] += 1
            bucket.latencies.append(loop.time() - scheduled)

        sent = 0
        reported = 0
        while True:
            scheduled = start + sent / rate
            if scheduled - start >= total:
                break
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            index = int((scheduled - start) // interval)
            bucket = buckets.setdefault(index, Interval())
            bucket.sent += 1
            kind = _kind(rng, config["mix"])
            gen = generation.value
            if len(pending) >= config["max_in_flight"]:
                bucket.outcomes[f"{kind}: not sent (client over {config['max_in_flight']} in flight)"] += 1
            else:
                task = asyncio.create_task(one(index, scheduled, kind, minter.token(kind, gen, rng), gen))
                pending.add(task)
                task.add_done_callback(pending.discard)
            sent += 1
            # An interval is reported once every request scheduled in it is answered.
            while reported < index and _done(buckets[reported]):
                results.put(buckets.pop(reported).summary(reported, interval))
                reported += 1
        if pending:
            await asyncio.wait(pending, timeout=config["timeout"] + 5)
        for index in sorted(buckets):
            seconds = min(interval, total - index * interval)
            results.put(buckets[index].summary(index, seconds))
        results.put({"done": True, "sent": sent, "cpu": time.process_time()})


def _done(bucket: Interval) -> bool:
    return sum(bucket.outcomes.values()) >= bucket.sent


def client_main(config: dict[str, Any], generation: Any, results: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(_load(config, generation, results))
    else:
        uvloop.run(_load(config, generation, results))


# -- the stack and the measurements ---------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class CpuMeter:
    """CPU used by each process of the stack from now on, as a share of one core."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.started = time.monotonic()
        self.pids: dict[str, int] = {}
        self.at_start: dict[str, float] = {}
        #: CPU seconds a process reported itself before it exited.
        self.final: dict[str, float] = {}
        self.add(pids)

    def add(self, pids: dict[str, int]) -> None:
        for name, pid in pids.items():
            if self.pids.get(name) != pid:
                self.pids[name] = pid
                self.at_start[name] = cpu_seconds(pid)

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        used = {name: self.final.get(name, cpu_seconds(pid)) - self.at_start[name] for name, pid in self.pids.items()}
        return "CPU during the soak, % of one core: " + ", ".join(
            f"{name} {seconds / elapsed * 100:.0f}" for name, seconds in used.items())


class RssSampler(threading.Thread):
    """Every ``every`` seconds, the RSS of each worker the supervisor lists
    (``/readyz``); notes a worker whose pid changed (restarted)."""

    def __init__(self, authz: Authz, every: float) -> None:
        super().__init__(daemon=True)
        self.authz = authz
        self.every = every
        self.samples: list[tuple[float, dict[int, float]]] = []
        self.pids: dict[int, int] = {}
        self.restarts: list[str] = []
        self.started = time.monotonic()
        self.stop = threading.Event()

    def workers(self) -> dict[int, int]:
        from testkit.procs import http_get

        try:
            _status, _headers, body = http_get(self.authz.http + "/readyz")
            listed = {w["index"]: w["pid"] for w in json.loads(body)["workers"] if w.get("pid")}
        except (OSError, ValueError, KeyError):
            listed = {}
        for index, pid in listed.items():
            if self.pids.get(index, pid) != pid:
                self.restarts.append(f"worker {index}: pid {self.pids[index]} -> {pid}")
            self.pids[index] = pid
        return dict(self.pids)

    def sample(self) -> dict[int, float]:
        found = {index: rss for index, pid in self.workers().items() if (rss := rss_mb(pid)) is not None}
        self.samples.append((time.monotonic() - self.started, found))
        return found

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.sample()

    def at(self, seconds: float) -> dict[int, float]:
        """The last sample taken at or before ``seconds`` into the run."""
        found: dict[int, float] = {}
        for when, values in self.samples:
            if when <= seconds:
                found = values
        return found


def es256_key(kid: str) -> tuple[str, bytes, dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return kid, pem, public_jwk(key, kid=kid, alg="ES256")


def write_policy(directory: Path, issuer: str, rate: float, share: dict[str, float], warmup: float,
                 workers: int) -> Path:
    """The soak policy, with caches that fill in half the warm-up: each
    worker sees rate * share / workers unique tokens a second."""
    per_worker = rate * share["miss"] / workers
    decisions = max(1000, int(per_worker * warmup * 60 / 2))
    from testkit.paths import ACCEPTANCE

    (directory / "identity-es256.pem").write_bytes((ACCEPTANCE / "identity-es256.pem").read_bytes())
    path = directory / "policy.yaml"
    path.write_text(POLICY.format(issuer=issuer, identity_key="identity-es256.pem", decisions=decisions,
                                  tokens=max(1000, decisions // 4)))
    return path


def run_client(config: dict[str, Any], generation: Any) -> tuple[Any, Any]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=client_main, args=(config, generation, results), daemon=True)
    process.start()
    ready = results.get(timeout=120)
    assert ready == {"ready": True}, ready
    return process, results


def _results(process: Any, results: Any) -> Iterator[dict[str, Any]]:
    """The load generator's interval summaries, and last its "done"."""
    while True:
        try:
            item: dict[str, Any] = results.get(timeout=5)
        except queue.Empty:
            if not process.is_alive():
                raise SystemExit(f"the load generator exited (code {process.exitcode})") from None
            continue
        yield item
        if "done" in item:
            process.join(30)
            return


def probe(base: dict[str, Any], seconds: float, generation: Any) -> float:
    """Closed-loop throughput of the mix: answers with the expected status per second."""
    process, results = run_client({**base, "rate": None, "seconds": seconds}, generation)
    found = results.get(timeout=seconds + 120)
    process.join(30)
    ok: int = sum(n for outcome, n in found["probe"].items() if outcome.startswith("ok"))
    print(f"capacity probe: {ok / found['seconds']:,.0f} expected answers/s over {found['seconds']:.1f} s, "
          f"outcomes {found['probe']}", flush=True)
    return ok / float(found["seconds"])


#: Envoy's counters of the authz cluster worth printing (besides every ext_authz one).
CLUSTER_COUNTERS = ("upstream_rq_timeout", "upstream_cx_connect_fail", "upstream_rq_pending_overflow",
                    "upstream_cx_destroy_remote_with_active_rq", "upstream_rq_retry", "upstream_rq_total")


def envoy_counters(envoy: Envoy) -> dict[str, int]:
    stats = envoy.stats()
    out = {k.rsplit(".", 1)[-1]: v for k, v in stats.items() if k.startswith("http.ingress_http.ext_authz.") and v}
    out.update({f"authz cluster {name}": stats.get(f"cluster.authz.{name}", 0) for name in CLUSTER_COUNTERS})
    return out


def authz_counters(authz: Authz) -> dict[str, float]:
    """authz's decisions by reason and cache lookups by outcome (``/metrics``, all workers)."""
    from testkit.procs import http_get

    _status, _headers, body = http_get(authz.http + "/metrics")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith(("authz_decisions_total{", "authz_cache_requests_total{")):
            name, value = line.rsplit(" ", 1)
            out[name] = out.get(name, 0.0) + float(value)
    return out


def _grouped(counts: dict[str, float], metric: str, label: str, **only: str) -> dict[str, int]:
    """``metric``'s counts summed by one label, of the series whose labels include ``only``."""
    out: Counter[str] = Counter()
    for name, value in counts.items():
        if name.startswith(metric + "{"):
            labels = {k: v.strip('"') for k, v in (part.split("=", 1) for part in name[len(metric) + 1:-1].split(","))}
            if all(labels.get(k) == v for k, v in only.items()):
                out[labels[label]] += int(value)
    return dict(out)


def decided_line(counts: dict[str, float]) -> str:
    reasons = _grouped(counts, "authz_decisions_total", "reason")
    caches = {cache: _grouped(counts, "authz_cache_requests_total", "outcome", cache=cache)
              for cache in ("decisions", "tokens")}
    return f"authz during the soak: decisions by reason {json.dumps(reasons)}; cache lookups {json.dumps(caches)}"


def main() -> int:
    # The stack's modules are imported here, not at the top: the load
    # generator's process (spawned) imports this module and needs none of them.
    from authz.tools.envoy_config import EnvoyOptions
    from testkit.idp import FakeIdP
    from testkit.procs import Authz, Envoy

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="soak duration (default %(default)s)")
    parser.add_argument("--rate", type=float, default=None, help="requests/s (default: --share of measured capacity)")
    parser.add_argument("--share", type=float, default=0.8, help="share of capacity to run at (default %(default)s)")
    parser.add_argument("--probe", type=float, default=15.0, help="seconds of the capacity probe (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="authz workers (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="minutes before the RSS baseline (default: a fifth of the run, at least 0.5)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds per printed line (default %(default)s)")
    parser.add_argument("--rss-every", type=float, default=10.0,
                        help="seconds between RSS samples (default %(default)s)")
    parser.add_argument("--overlap", type=float, default=45.0,
                        help="seconds the old key stays published after the rotation (default %(default)s)")
    parser.add_argument("--mix", default="hit=0.6,miss=0.2,forged=0.1,expired=0.1",
                        help="request kinds and their shares (default %(default)s)")
    parser.add_argument("--connections", type=int, default=64, help="client connections to Envoy (default %(default)s)")
    parser.add_argument("--authz-args", default="", help="more options for authz serve, e.g. '--server aio'")
    parser.add_argument("--authz-log", type=Path, default=None,
                        help="write authz's output (its decision log) to this file")
    args = parser.parse_args()
    mix = {k: float(v) for k, v in (part.split("=") for part in args.mix.split(","))}
    if set(mix) != set(KINDS):
        parser.error(f"--mix names each of {', '.join(KINDS)}")
    warmup = args.warmup if args.warmup is not None else max(0.5, args.minutes / 5)
    seconds = args.minutes * 60
    generation = multiprocessing.get_context("spawn").Value("i", 0)
    old, new = es256_key("soak-1"), es256_key("soak-2")

    with tempfile.TemporaryDirectory() as tmp, FakeIdP() as idp:
        directory = Path(tmp)
        idp.jwks = {"keys": [old[2]]}
        # Caches are sized for the rate; before it is known, for a guess (the probe only needs a policy).
        policy = write_policy(directory, idp.issuer, args.rate or 1000.0, mix, warmup, args.workers)
        with Authz(policy, workers=args.workers, worker_ports=True, extra=shlex.split(args.authz_args)) as authz, \
                Envoy(directory,
                      EnvoyOptions(shape="edge", authz=authz.worker_addresses, direct_response=True)) as envoy:
            base = {"url": envoy.url + "/api/orders", "issuer": idp.issuer, "keys": [old[:2], new[:2]],
                    "lifetime": seconds + 3600, "mix": mix, "connections": args.connections, "timeout": 10.0,
                    "interval": args.interval, "max_in_flight": 20 * args.connections}
            rate = args.rate if args.rate is not None else args.share * probe(base, args.probe, generation)
            if args.rate is None:
                mark = authz.proc.mark()
                write_policy(directory, idp.issuer, rate, mix, warmup, args.workers)
                authz.proc.wait_for("policy reloaded", since=mark, timeout=60)
            print(f"soak: {rate:,.0f} req/s for {args.minutes:g} min, {args.workers} workers, mix {args.mix}; "
                  f"RSS baseline after {warmup:g} min; key rotation at {args.minutes / 2:g} min", flush=True)
            before = envoy_counters(envoy)
            decided_before = authz_counters(authz)
            process, results = run_client({**base, "rate": rate, "seconds": seconds}, generation)
            cpu = CpuMeter({"load generator": process.pid, "Envoy": envoy.proc.popen.pid,
                            "authz supervisor": authz.proc.popen.pid})
            sampler = RssSampler(authz, args.rss_every)
            sampler.sample()
            sampler.start()
            report = Report(sampler, warmup * 60, args.interval)
            rotation = threading.Timer(seconds / 2, rotate, (idp, old, new, generation, args.overlap))
            rotation.daemon = True
            rotation.start()
            cpu.add({f"worker {i}": pid for i, pid in sampler.workers().items()})
            for item in _results(process, results):
                if "done" in item:  # the generator has exited: its own count of its CPU
                    cpu.final["load generator"] = item["cpu"]
                else:
                    report.interval(item)
            cpu.add({f"worker {i}": pid for i, pid in sampler.workers().items()})
            print(cpu.line())
            rotation.cancel()
            sampler.stop.set()
            sampler.sample()
            after = envoy_counters(envoy)
            decided = {k: v - decided_before.get(k, 0.0) for k, v in authz_counters(authz).items()}
            print(decided_line(decided))
            report.finish({k: v - before.get(k, 0) for k, v in after.items()}, idp.jwks_fetches)
            if args.authz_log is not None:
                args.authz_log.write_text(authz.proc.output(last=len(authz.proc.lines)) + "\n")
    return 0


def rotate(idp: FakeIdP, old: tuple[str, bytes, dict[str, Any]], new: tuple[str, bytes, dict[str, Any]],
           generation: Any, overlap: float) -> None:
    """Publish the new key beside the old, sign with it from now on, and
    withdraw the old key ``overlap`` seconds later."""
    idp.jwks = {"keys": [old[2], new[2]]}
    generation.value = 1
    print(f"rotation: key {new[0]} published and signing; {old[0]} withdrawn in {overlap:g} s", flush=True)

    def withdraw() -> None:
        idp.jwks = {"keys": [new[2]]}
        print(f"rotation: key {old[0]} withdrawn", flush=True)

    timer = threading.Timer(overlap, withdraw)
    timer.daemon = True
    timer.start()


class Report:
    def __init__(self, sampler: RssSampler, warmup: float, interval: float) -> None:
        self.sampler = sampler
        self.warmup = warmup
        self.length = interval
        self.unexpected: Counter[str] = Counter()
        self.ok: Counter[str] = Counter()
        self.sent = 0
        self.p99: list[float] = []
        print(f"{'interval':>9} {'sent':>7} {'answered':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  "
              f"{'RSS MB per worker':<22} unexpected", flush=True)

    def interval(self, item: dict[str, Any]) -> None:
        rss = self.sampler.at(item["index"] * self.length + item["seconds"])
        bad = {k: v for k, v in item["outcomes"].items() if not k.startswith("ok")}
        self.unexpected.update(bad)
        self.ok.update({k: v for k, v in item["outcomes"].items() if k.startswith("ok")})
        self.sent += item["sent"]
        if item["p99_ms"] is not None:
            self.p99.append(item["p99_ms"])
        shown = " ".join(f"w{i} {v:.1f}" for i, v in sorted(rss.items()))
        print(f"{item['index'] + 1:>9} {item['sent']:>7} {item['answered']:>8} {item['p50_ms'] or 0:>8.2f} "
              f"{item['p99_ms'] or 0:>8.2f} {item['max_ms'] or 0:>8.2f}  {shown:<22} "
              f"{sum(bad.values())} {json.dumps(bad) if bad else ''}", flush=True)

    def finish(self, envoy: dict[str, int], jwks_fetches: int) -> None:
        samples = self.sampler.samples
        print("RSS per worker over time (s: MB): " + "; ".join(
            f"{when:.0f}: " + " ".join(f"w{i} {v:.1f}" for i, v in sorted(values.items())) for when, values in samples))
        base = self.sampler.at(self.warmup)
        later = [values for when, values in samples if when > self.warmup]
        growth = {}
        for index, value in base.items():
            peak = max((values.get(index, 0.0) for values in later), default=value)
            last = later[-1].get(index, value) if later else value
            growth[index] = (value, peak, last, (peak - value) / value * 100)
        print("RSS after warm-up (MB): " + "; ".join(
            f"w{i} {b:.1f} -> peak {p:.1f}, last {last:.1f} ({g:+.1f} %)"
            for i, (b, p, last, g) in sorted(growth.items())))
        print(f"key-set fetches: {jwks_fetches}; expected answers by key generation: "
              + ", ".join(f"{k.split(':')[1]}: {v}" for k, v in sorted(self.ok.items())))
        print(f"Envoy during the soak (ext_authz counters that moved, the authz cluster's): {json.dumps(envoy)}")
        print(f"unexpected outcomes by class: {json.dumps(dict(self.unexpected), sort_keys=True)}")
        if self.sampler.restarts:
            print("worker restarts: " + "; ".join(self.sampler.restarts))
        worst = max((g for *_rest, g in growth.values()), default=float("nan"))
        unexpected = sum(self.unexpected.values()) + len(self.sampler.restarts)
        rss_ok = bool(growth) and worst < 10
        print(f"verdict: RSS growth after warm-up {worst:+.1f} % (goal < 10 %): {'met' if rss_ok else 'NOT met'}; "
              f"unexpected outcomes {unexpected} of {self.sent} requests (goal 0): "
              f"{'met' if unexpected == 0 else 'NOT met'}; "
              f"p99 per interval median {statistics.median(self.p99) if self.p99 else 0:.2f} ms, "
              f"worst {max(self.p99, default=0):.2f} ms", flush=True)
        unsent = sum(count for kind, count in self.unexpected.items() if ": not sent " in kind)
        if unsent:
            print(f"note: {unsent} of the unexpected outcomes were never sent: answers came back slower than the "
                  "rate, so the client hit its in-flight limit. This machine (the load generator, Envoy and the "
                  "workers together) did not hold the rate; run again with a lower --rate or --share to judge "
                  "authz's answers.", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
