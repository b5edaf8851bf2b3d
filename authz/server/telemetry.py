"""Every metric authz exports, in one place, with its description.

Metrics go through the OpenTelemetry SDK. The Check hot path only bumps plain
integers (a dict increment costs ~0.15 µs where a synchronous OTel counter
costs several µs); the SDK reads them through observable instruments when
metrics are collected. Check latency is the exception: OpenTelemetry has no
observable histogram, and its synchronous ``Histogram.record`` measured 5-9 µs
per call (``benchmarks/hotpath_bench.py``), as much as a whole cached Check, so
:class:`LatencyHistogram` counts into the same fixed buckets itself (~0.3 µs)
and the snapshot carries it next to the SDK's data.

Each worker process has its own :class:`Telemetry`; the supervisor collects a
:func:`snapshot` from every worker and merges them (:mod:`authz.server.metrics`)
into one Prometheus text exposition at ``/metrics``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, InMemoryMetricReader, Sum


@dataclass(frozen=True, slots=True)
class MetricInfo:
    name: str
    kind: str  # counter | gauge | histogram
    description: str
    labels: tuple[str, ...] = ()
    merge: str = "sum"  # how the supervisor merges workers: sum | max | min


CHECK_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

METRICS: dict[str, MetricInfo] = {m.name: m for m in (
    MetricInfo("authz_decisions_total", "counter", "Decisions made, by reason code and by the identity's issuer (issuer name, api_key, peer or none).", ("reason", "issuer")),
    MetricInfo("authz_dry_run_denials_total", "counter", "Denials a dry-run rule (or --dry-run) would have made, by rule.", ("rule",)),
    MetricInfo("authz_check_duration_seconds", "histogram", "Time to answer one Check inside authz, from request bytes to response bytes.", ()),
    MetricInfo("authz_checks_in_flight", "gauge", "Checks being decided right now.", ()),
    MetricInfo("authz_cache_requests_total", "counter", "Cache lookups, by cache (decisions, tokens) and outcome (hit, miss).", ("cache", "outcome")),
    MetricInfo("authz_cache_evictions_total", "counter", "Entries evicted by the LRU bound, by cache.", ("cache",)),
    MetricInfo("authz_cache_entries", "gauge", "Entries held, by cache.", ("cache",)),
    MetricInfo("authz_jwks_fetches_total", "counter", "Key-set fetches, by issuer and outcome (success, failure).", ("issuer", "outcome")),
    MetricInfo("authz_jwks_key_set_age_seconds", "gauge", "Seconds since the issuer's key set was last fetched successfully (oldest worker).", ("issuer",), "max"),
    MetricInfo("authz_config_reloads_total", "counter", "Policy reloads, by outcome (success, failure).", ("outcome",)),
    MetricInfo("authz_policy_generation", "gauge", "Generation of the policy in force (lowest among workers).", (), "min"),
    MetricInfo("authz_workers", "gauge", "Worker processes answering Checks.", ()),
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
        return {"labels": {}, "bounds": list(self.bounds), "counts": list(self.counts), "sum": self.sum, "count": self.count}


class Telemetry:
    """One worker's metrics: cheap counters on the hot path, read by the SDK."""

    def __init__(self, *, sources: Callable[[], dict[str, Any]] | None = None) -> None:
        self.decisions: Counter[tuple[str, str]] = Counter()
        self.dry_run_denials: Counter[str] = Counter()
        self.reloads: Counter[str] = Counter()
        self.in_flight = 0
        self.generation = 0
        # Returns {"caches": {name: Stats-like}, "jwks": {issuer: status dict}}.
        self._sources = sources or (lambda: {})
        self.latency = LatencyHistogram()
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        meter = self.provider.get_meter("authz")
        observe = (
            ("authz_decisions_total", meter.create_observable_counter, self._observe_decisions),
            ("authz_dry_run_denials_total", meter.create_observable_counter, self._observe_dry_run),
            ("authz_checks_in_flight", meter.create_observable_gauge, lambda _o: [Observation(self.in_flight)]),
            ("authz_cache_requests_total", meter.create_observable_counter, self._observe_cache_requests),
            ("authz_cache_evictions_total", meter.create_observable_counter, self._observe_cache_evictions),
            ("authz_cache_entries", meter.create_observable_gauge, self._observe_cache_entries),
            ("authz_jwks_fetches_total", meter.create_observable_counter, self._observe_fetches),
            ("authz_jwks_key_set_age_seconds", meter.create_observable_gauge, self._observe_key_age),
            ("authz_config_reloads_total", meter.create_observable_counter, self._observe_reloads),
            ("authz_policy_generation", meter.create_observable_gauge, lambda _o: [Observation(self.generation)]),
            ("authz_workers", meter.create_observable_gauge, lambda _o: [Observation(1)]),
        )
        for name, create, callback in observe:
            create(name, callbacks=[callback], description=METRICS[name].description)

    # -- observable callbacks --------------------------------------------------

    def _observe_decisions(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"reason": r, "issuer": i}) for (r, i), n in list(self.decisions.items())]

    def _observe_dry_run(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"rule": rule}) for rule, n in list(self.dry_run_denials.items())]

    def _observe_reloads(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"outcome": o}) for o, n in list(self.reloads.items())]

    def _caches(self) -> dict[str, Any]:
        caches: dict[str, Any] = self._sources().get("caches", {})
        return caches

    def _observe_cache_requests(self, _options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for name, (stats, _size) in self._caches().items():
            out.append(Observation(stats.hits, {"cache": name, "outcome": "hit"}))
            out.append(Observation(stats.misses, {"cache": name, "outcome": "miss"}))
        return out

    def _observe_cache_evictions(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(stats.evictions, {"cache": name}) for name, (stats, _size) in self._caches().items()]

    def _observe_cache_entries(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(size, {"cache": name}) for name, (_stats, size) in self._caches().items()]

    def _observe_fetches(self, _options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for issuer, status in self._sources().get("jwks", {}).items():
            if status.get("source") == "remote":
                out.append(Observation(status.get("successes", 0), {"issuer": issuer, "outcome": "success"}))
                out.append(Observation(status.get("failures_total", 0), {"issuer": issuer, "outcome": "failure"}))
        return out

    def _observe_key_age(self, _options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for issuer, status in self._sources().get("jwks", {}).items():
            age = status.get("age_seconds")
            if age is not None:
                out.append(Observation(age, {"issuer": issuer}))
        return out

    def snapshot(self) -> list[dict[str, Any]]:
        """The current values as plain data (sent to the supervisor)."""
        data = self.reader.get_metrics_data()
        out: list[dict[str, Any]] = [
            {"name": "authz_check_duration_seconds", "kind": "histogram", "points": [self.latency.point()]},
        ]
        if data is None:
            return out
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    body = metric.data
                    # Every SDK instrument here is observable: sums and gauges only.
                    if not isinstance(body, Sum | Gauge):
                        continue
                    points = [{"labels": dict(point.attributes or {}), "value": point.value} for point in body.data_points]
                    kind = "counter" if isinstance(body, Sum) and body.is_monotonic else "gauge"
                    out.append({"name": metric.name, "kind": kind, "points": points})
        return out

