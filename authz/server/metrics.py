"""Merging the workers' telemetry snapshots into one Prometheus exposition.

Each worker sends :meth:`authz.server.telemetry.Telemetry.snapshot` (plain
data) over its control pipe. Counters and histograms add up across workers;
gauges merge as their definition in :mod:`authz.server.telemetry` says (sum,
max or min). The text format itself is written by ``prometheus_client``,
from a collector that yields the merged values.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from authz import __version__
from authz.server.telemetry import METRICS, Snapshot
from authz.server.telemetry import labels as label_set

CONTENT_TYPE = CONTENT_TYPE_LATEST


def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """One snapshot: every metric's series summed, maxed or minned over workers."""
    merged: Snapshot = {}
    for snapshot in snapshots:
        for name, series in snapshot.items():
            info = METRICS.get(name)
            if info is None:
                continue
            into = merged.setdefault(name, {})
            for labels, value in series.items():
                into[labels] = value if labels not in into else _combine(info.merge, into[labels], value)
    return merged


def policy_hash(digests: Mapping[str, str | None]) -> str:
    """The policy's hash for ``authz_build_info``: SHA-256 over the SHA-256
    of each file it is made of (the policy, then the files it names, in the
    policy's order), first 16 hex digits."""
    joined = "\n".join(digest or "-" for digest in digests.values())
    return hashlib.sha256(joined.encode("ascii")).hexdigest()[:16]


def supervisor_series(*, generation: int, policy_hash: str, reloads: Mapping[str, int], alive: int, indexes: list[int],
                      restarted: Mapping[int, int], in_flight_limit: int) -> Snapshot:
    """The metrics the supervisor alone knows, as snapshot series."""
    build = label_set(version=__version__, python=platform.python_version(),
                   policy_generation=str(generation), policy_hash=policy_hash)
    return {
        "authz_build_info": {build: 1},
        "authz_config_reloads_total": {label_set(outcome=o): reloads.get(o, 0) for o in ("success", "failure")},
        "authz_workers": {(): alive},
        "authz_worker_restarts_total": {label_set(worker=str(index)): restarted.get(index, 0)
                                        for index in sorted({*indexes, *restarted})},
        "authz_checks_in_flight_limit": {(): in_flight_limit},
    }


def _combine(how: str, a: Any, b: Any) -> Any:
    if isinstance(a, dict):  # histograms with the same buckets add up
        if a["bounds"] != b["bounds"]:
            return a
        return {"bounds": a["bounds"], "counts": [x + y for x, y in zip(a["counts"], b["counts"], strict=True)],
                "sum": a["sum"] + b["sum"], "count": a["count"] + b["count"]}
    if how == "max":
        return max(a, b)
    if how == "min":
        return min(a, b)
    return a + b


class _Merged(Collector):
    def __init__(self, merged: Snapshot) -> None:
        self.merged = merged

    def collect(self) -> Iterator[Metric]:
        for name, info in METRICS.items():
            series = self.merged.get(name)
            if not series:
                continue
            label_names = list(info.labels)
            family: Metric
            if info.kind == "counter":
                family = CounterMetricFamily(name, info.description, labels=label_names)
            elif info.kind == "gauge":
                family = GaugeMetricFamily(name, info.description, labels=label_names)
            else:
                family = HistogramMetricFamily(name, info.description, labels=label_names)
            for labels, value in sorted(series.items()):
                as_dict = dict(labels)
                values = [as_dict.get(label, "") for label in label_names]
                if isinstance(family, HistogramMetricFamily):
                    cumulative, buckets = 0, []
                    bounds = [*value["bounds"], float("inf")]
                    for bound, count in zip(bounds, value["counts"], strict=True):
                        cumulative += count
                        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
                    family.add_metric(values, buckets, value["sum"])
                else:
                    family.add_metric(values, value)
            yield family


def render(merged: Snapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(merged))
    return generate_latest(registry)
