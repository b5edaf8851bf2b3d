"""Every metric authz exports follows Prometheus' naming conventions, has a
description, and is listed in docs/operations.md exactly as defined in
authz/server/telemetry.py (and nothing else is listed there)."""

from __future__ import annotations

import re

from authz.server.telemetry import METRICS, MetricInfo
from testkit.paths import REPO

OPERATIONS = REPO / "docs" / "operations.md"
_ROW = re.compile(r"^\| `(authz_[a-z0-9_]+)` \| (\w+) \| ([^|]*) \| (.*) \|$")


def documented() -> dict[str, tuple[str, tuple[str, ...], str]]:
    rows = {}
    for line in OPERATIONS.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match:
            name, kind, labels, description = match.groups()
            assert name not in rows, f"{name} is listed twice"
            names = tuple(label.strip() for label in labels.split(",")) if labels.strip() != "-" else ()
            rows[name] = (kind, names, description.strip())
    return rows


def convention_problems(metric: MetricInfo) -> list[str]:
    name, problems = metric.name, []
    if not re.fullmatch(r"authz_[a-z][a-z0-9_]*[a-z0-9]", name) or "__" in name:
        problems.append("not authz_ snake_case")
    if (metric.kind == "counter") != name.endswith("_total"):
        problems.append("counters, and only counters, end in _total")
    if metric.kind == "histogram" and not name.endswith("_seconds"):
        problems.append("a latency histogram is in seconds")
    for unit in ("seconds", "bytes"):
        if unit in name and not name.removesuffix("_total").endswith(unit):
            problems.append(f"the unit {unit} goes last")
    if re.search(r"_(ms|milliseconds|kb|mb|percent)(_|$)", name):
        problems.append("base units only (seconds, bytes, ratios)")
    if name.endswith("_info") and (metric.kind != "gauge" or not metric.description.startswith("Always 1")):
        problems.append("an _info metric is a gauge that is always 1")
    if not metric.description or not metric.description.endswith("."):
        problems.append("no description sentence")
    for label in metric.labels:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", label) or label in ("le", "quantile") or label.startswith("__"):
            problems.append(f"label {label!r}")
    if metric.merge not in ("sum", "max", "min"):
        problems.append(f"merge {metric.merge!r}")
    return problems


def test_every_metric_follows_the_conventions() -> None:
    assert {name: convention_problems(m) for name, m in METRICS.items() if convention_problems(m)} == {}


def test_the_convention_check_catches_bad_names() -> None:
    assert convention_problems(MetricInfo("authz_decisions", "counter", "Decisions."))
    assert convention_problems(MetricInfo("authz_latency_ms", "histogram", "Latency."))
    assert convention_problems(MetricInfo("authz_cache_bytes_held", "gauge", "Bytes."))
    assert convention_problems(MetricInfo("authz_x_total", "gauge", ""))
    assert convention_problems(MetricInfo("authz_x_total", "counter", "X.", ("Bad-Label",)))


def test_docs_list_every_metric_as_defined() -> None:
    rows = documented()
    assert set(rows) == set(METRICS), {"undocumented": set(METRICS) - set(rows), "not exported": set(rows) - set(METRICS)}
    for name, metric in METRICS.items():
        assert rows[name] == (metric.kind, metric.labels, metric.description), name
