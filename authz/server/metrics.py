"""Merging the workers' telemetry snapshots into one Prometheus exposition.

Counters and histograms add up across workers; gauges merge as their
definition in :mod:`authz.server.telemetry` says (sum, max or min). The text format
itself is written by ``prometheus_client``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from authz.server.telemetry import METRICS

Labels = tuple[tuple[str, str], ...]
CONTENT_TYPE = CONTENT_TYPE_LATEST


def merge(snapshots: Iterable[list[dict[str, Any]]]) -> dict[str, dict[Labels, Any]]:
    """{metric name: {labels: value or histogram dict}} summed/maxed over workers."""
    merged: dict[str, dict[Labels, Any]] = {}
    for snapshot in snapshots:
        for metric in snapshot:
            name = metric["name"]
            info = METRICS.get(name)
            if info is None:
                continue
            series = merged.setdefault(name, {})
            for point in metric["points"]:
                labels: Labels = tuple(sorted((str(k), str(v)) for k, v in point["labels"].items()))
                if "counts" in point:
                    found = series.get(labels)
                    if found is None:
                        series[labels] = {"bounds": list(point["bounds"]), "counts": list(point["counts"]),
                                          "sum": point["sum"], "count": point["count"]}
                    elif found["bounds"] == list(point["bounds"]):
                        found["counts"] = [a + b for a, b in zip(found["counts"], point["counts"], strict=True)]
                        found["sum"] += point["sum"]
                        found["count"] += point["count"]
                    continue
                value = point["value"]
                if labels not in series:
                    series[labels] = value
                elif info.merge == "max":
                    series[labels] = max(series[labels], value)
                elif info.merge == "min":
                    series[labels] = min(series[labels], value)
                else:
                    series[labels] = series[labels] + value
    return merged


class _Snapshot(Collector):
    def __init__(self, merged: dict[str, dict[Labels, Any]]) -> None:
        self.merged = merged

    def collect(self) -> Iterator[Metric]:
        for name, info in METRICS.items():
            series = self.merged.get(name)
            if series is None:
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


def render(merged: dict[str, dict[Labels, Any]]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(merged))
    return generate_latest(registry)
