"""Every metric authz exports, in one place, with its description; and one
worker's counts of them.

The Check hot path only bumps plain integers (a dict increment costs
~0.15 µs; a synchronous OpenTelemetry counter costs several µs) and counts
its latency into fixed buckets with :class:`LatencyHistogram` (~0.3 µs;
OpenTelemetry's ``Histogram.record`` measured 5-9 µs per call,
``benchmarks/hotpath_bench.py``, as much as a whole cached Check).
:meth:`Telemetry.snapshot` reads these counts, and those the caches and key
sets keep, as plain data; each worker sends its snapshot to the supervisor
over the control pipe, and the supervisor merges them (:mod:`authz.server.metrics`)
into one Prometheus text exposition at ``/metrics``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Labels = tuple[tuple[str, str], ...]  # (label, value) pairs, sorted by label
# One metric's values by labels: a number, or a histogram (LatencyHistogram.point()).
Series = dict[Labels, Any]
# Metric name -> its series. A metric with no series is left out, as
# /metrics leaves it out.
Snapshot = dict[str, Series]


def labels(**values: str) -> Labels:
    return tuple(sorted(values.items()))


@dataclass(frozen=True, slots=True)
class MetricInfo:
    name: str
    kind: str  # counter | gauge | histogram
    description: str
    labels: tuple[str, ...] = ()
    merge: str = "sum"  # how the supervisor merges workers: sum | max | min


CHECK_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

METRICS: dict[str, MetricInfo] = {m.name: m for m in (
    MetricInfo("authz_build_info", "gauge",
               "Always 1: the running authz version, the Python it runs on, and the generation and SHA-256 (first 16 "
               "hex digits) of the policy in force.", ("version", "python", "policy_generation", "policy_hash"), "max"),
    MetricInfo("authz_decisions_total", "counter",
               "Decisions made, by reason code, by the identity's issuer (issuer name, api_key, peer or none) and by "
               "the door that asked (grpc, http).", ("reason", "issuer", "door")),
    MetricInfo("authz_rule_decisions_total", "counter",
               "Decisions by the rule or role that made them (names come from the policy; empty when none did) and by "
               "decision (allow, deny).", ("rule", "decision")),
    MetricInfo("authz_dry_run_denials_total", "counter",
               "Denials a dry-run rule (or --dry-run) would have made, by rule.", ("rule",)),
    MetricInfo("authz_response_omissions_total", "counter",
               "Answers sent without a client header or metadata key the policy computes, because its expression "
               "failed or its value could not be sent, by kind (client_header, metadata) and name.", ("kind", "name")),
    MetricInfo("authz_check_duration_seconds", "histogram",
               "Time to answer one Check inside authz, from request bytes to response bytes, by door (grpc, http).",
               ("door",)),
    MetricInfo("authz_checks_in_flight", "gauge",
               "Checks being decided right now, all workers and doors (on an event loop, those waiting for a key set: "
               "the others are decided one at a time).", ()),
    MetricInfo("authz_worker_checks_in_flight", "gauge",
               "Checks being decided right now, by worker (its index) and door: compare with "
               "authz_checks_in_flight_limit, which applies to each.", ("worker", "door")),
    MetricInfo("authz_checks_in_flight_limit", "gauge",
               "--max-concurrent-checks: the most Checks one worker decides at once on one door; one more is refused.",
               (), "max"),
    MetricInfo("authz_cache_requests_total", "counter",
               "Cache lookups, by cache (decisions, tokens) and outcome (hit, miss).", ("cache", "outcome")),
    MetricInfo("authz_cache_evictions_total", "counter", "Entries evicted by the LRU bound, by cache.", ("cache",)),
    MetricInfo("authz_cache_entries", "gauge", "Entries held, by cache.", ("cache",)),
    MetricInfo("authz_cache_bytes", "gauge",
               "Memory the entries of each cache hold, estimated from a sample of entries (their objects and the "
               "cache's index per entry).", ("cache",)),
    MetricInfo("authz_jwks_fetches_total", "counter", "Key-set fetches, by issuer and outcome (success, failure).",
               ("issuer", "outcome")),
    MetricInfo("authz_jwks_fetch_seconds_total", "counter",
               "Time spent fetching each issuer's key set (discovery included), successful or not: divided by "
               "authz_jwks_fetches_total, the mean fetch time.", ("issuer",)),
    MetricInfo("authz_jwks_keys", "gauge", "Keys in each issuer's key set (the largest among workers).", ("issuer",),
               "max"),
    MetricInfo("authz_jwks_key_set_age_seconds", "gauge",
               "Seconds since the issuer's key set was last fetched successfully (oldest worker).", ("issuer",), "max"),
    MetricInfo("authz_outside_calls_total", "counter",
               "Calls to an outside endpoint (an issuer's introspection, a data source), by the issuer's or source's"
               " name (never a URL), kind (introspection, data) and outcome (success, failure: an error status, "
               "garbage, a timeout, no connection).", ("name", "kind", "outcome")),
    MetricInfo("authz_outside_call_duration_seconds", "histogram",
               "Time of each call to an outside endpoint, the wait for a free connection included, by name and kind.",
               ("name", "kind")),
    MetricInfo("authz_outside_answers_total", "counter",
               "Answers the Checks needed from an outside endpoint, by name, kind and where they came from (hit: its"
               " cache; miss: a call, made or shared; stale: an old answer standing in while the endpoint fails).",
               ("name", "kind", "outcome")),
    MetricInfo("authz_outside_cache_entries", "gauge",
               "Answers held in each outside endpoint's cache, by name and kind.", ("name", "kind")),
    MetricInfo("authz_outside_cache_bytes", "gauge",
               "Bytes the answers in each outside endpoint's cache hold (their documents' sizes), by name and kind.",
               ("name", "kind")),
    MetricInfo("authz_config_reloads_total", "counter", "Policy reloads, by outcome (success, failure).", ("outcome",)),
    MetricInfo("authz_config_reload_error", "gauge",
               "1 for each file (and its team, in a policy directory) the last reload failed on; none after a good "
               "one.", ("file", "team")),
    MetricInfo("authz_policy_generation", "gauge", "Generation of the policy in force (lowest among workers).", (),
               "min"),
    MetricInfo("authz_workers", "gauge", "Worker processes answering Checks.", ()),
    MetricInfo("authz_worker_restarts_total", "counter",
               "Worker processes started again after one exited, by worker index.", ("worker",)),
)}

class LatencyHistogram:
    """Fixed-bucket counts (bounds as Prometheus ``le``; the last bucket is +Inf)."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = CHECK_LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def record(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def point(self) -> dict[str, Any]:
        """The histogram as a series value (plain data)."""
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.sum, "count": self.count}


class DoorMeters:
    """One door's counts in one worker, resolved once and bumped in place."""

    __slots__ = ("in_flight", "latency")

    def __init__(self) -> None:
        self.in_flight = 0
        self.latency = LatencyHistogram()


#: A decision's labels, bound once per decision (a cached one keeps them):
#: (reason, issuer, door, rule, decision).
DecisionLabels = tuple[str, str, str, str, str]


class Telemetry:
    """One worker's metrics: cheap counters on the hot path, read by :meth:`snapshot`."""

    def __init__(self, *, sources: Callable[[], dict[str, Any]] | None = None, worker: int = 0) -> None:
        self.decisions: Counter[DecisionLabels] = Counter()
        self.dry_run_denials: Counter[str] = Counter()
        self.omissions: Counter[tuple[str, str]] = Counter()
        self.doors: dict[str, DoorMeters] = {}
        self.generation = 0
        self.worker = str(worker)
        # Returns {"caches": {name: (Stats, entries, bytes)}, "jwks": {issuer: status dict}}.
        self._sources = sources or (lambda: {})

    def door(self, name: str) -> DoorMeters:
        """The meters of door ``name`` (made on first use; hold on to them)."""
        meters = self.doors.get(name)
        if meters is None:  # setdefault: two threads asking first get the same meters
            meters = self.doors.setdefault(name, DoorMeters())
        return meters

    @property
    def in_flight(self) -> int:
        return sum(meters.in_flight for meters in list(self.doors.values()))

    def snapshot(self) -> Snapshot:
        """The current values as plain data (sent to the supervisor). Policy
        reloads, workers, restarts and the build are the supervisor's to count."""
        sources = self._sources()
        caches: dict[str, Any] = sources.get("caches", {})
        key_sets: dict[str, dict[str, Any]] = sources.get("jwks", {})
        remote = {issuer: status for issuer, status in key_sets.items() if status.get("source") == "remote"}
        doors = dict(self.doors) or {"grpc": DoorMeters()}
        by_rule: Counter[tuple[str, str]] = Counter()
        by_reason: Counter[tuple[str, str, str]] = Counter()
        for (reason, issuer, door, rule, decision), n in list(self.decisions.items()):
            by_reason[reason, issuer, door] += n
            by_rule[rule, decision] += n
        snapshot: Snapshot = {
            "authz_decisions_total": {
                labels(reason=reason, issuer=issuer, door=door): n for (reason, issuer, door), n in by_reason.items()},
            "authz_rule_decisions_total": {
                labels(rule=rule, decision=decision): n for (rule, decision), n in by_rule.items()},
            "authz_dry_run_denials_total": {labels(rule=rule): n for rule, n in list(self.dry_run_denials.items())},
            "authz_response_omissions_total": {
                labels(kind=kind, name=name): n for (kind, name), n in list(self.omissions.items())},
            "authz_check_duration_seconds": {
                labels(door=door): meters.latency.point() for door, meters in doors.items()},
            "authz_checks_in_flight": {(): sum(meters.in_flight for meters in doors.values())},
            "authz_worker_checks_in_flight": {
                labels(worker=self.worker, door=door): meters.in_flight for door, meters in doors.items()},
            "authz_cache_requests_total": {
                labels(cache=name, outcome=outcome): count
                for name, (stats, *_sizes) in caches.items()
                for outcome, count in (("hit", stats.hits), ("miss", stats.misses))},
            "authz_cache_evictions_total": {
                labels(cache=name): stats.evictions for name, (stats, *_sizes) in caches.items()},
            "authz_cache_entries": {labels(cache=name): sizes[0] for name, (_stats, *sizes) in caches.items()},
            "authz_cache_bytes": {
                labels(cache=name): sizes[1] for name, (_stats, *sizes) in caches.items() if len(sizes) > 1},
            "authz_jwks_fetches_total": {
                labels(issuer=issuer, outcome=outcome): status.get(field, 0)
                for issuer, status in remote.items()
                for outcome, field in (("success", "successes"), ("failure", "failures_total"))},
            "authz_jwks_fetch_seconds_total": {
                labels(issuer=issuer): status.get("fetch_seconds", 0.0) for issuer, status in remote.items()},
            "authz_jwks_keys": {
                labels(issuer=issuer): status["keys"] for issuer, status in key_sets.items() if "keys" in status},
            "authz_jwks_key_set_age_seconds": {
                labels(issuer=issuer): status["age_seconds"]
                for issuer, status in key_sets.items() if status.get("age_seconds") is not None},
            "authz_policy_generation": {(): self.generation},
            **_outside_series(sources.get("outside", {})),
        }
        return {name: series for name, series in snapshot.items() if series}


def _outside_series(endpoints: dict[str, Any]) -> Snapshot:
    """The ``authz_outside_*`` series of the endpoints a policy calls
    (:class:`authz.outside.calls.KeyedCalls`, by name)."""
    series: Snapshot = {name: {} for name in (
        "authz_outside_calls_total", "authz_outside_call_duration_seconds", "authz_outside_answers_total",
        "authz_outside_cache_entries", "authz_outside_cache_bytes")}
    for name, calls in endpoints.items():
        stats, kind = calls.stats, calls.kind
        series["authz_outside_calls_total"].update({
            labels(name=name, kind=kind, outcome="success"): stats.calls - stats.failures,
            labels(name=name, kind=kind, outcome="failure"): stats.failures})
        series["authz_outside_call_duration_seconds"][labels(name=name, kind=kind)] = stats.histogram()
        series["authz_outside_answers_total"].update({
            labels(name=name, kind=kind, outcome=outcome): getattr(stats, field)
            for outcome, field in (("hit", "hits"), ("miss", "misses"), ("stale", "stale"))})
        series["authz_outside_cache_entries"][labels(name=name, kind=kind)] = len(calls)
        series["authz_outside_cache_bytes"][labels(name=name, kind=kind)] = calls.estimated_bytes()
    return series
