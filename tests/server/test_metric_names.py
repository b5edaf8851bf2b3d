"""Every metric authz exports follows Prometheus' naming conventions, has a
description, and is listed in docs/operations.md exactly as defined in
authz/server/telemetry.py (and nothing else is listed there)."""

from __future__ import annotations

import re
import secrets

from google.protobuf import json_format

from authz.config import load_policy
from authz.engine import SystemClock
from authz.errors import Reason
from authz.server import metrics
from authz.server.service import CheckService, PolicyState
from authz.server.telemetry import METRICS, MetricInfo, Telemetry
from authz.wire.grpc import CheckRequest
from testkit.paths import ACCEPTANCE, REPO
from testkit.requests import check_request_json
from testkit.tokens import claims, token

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
    assert set(rows) == set(METRICS), {"undocumented": set(METRICS) - set(rows),
                                       "not exported": set(rows) - set(METRICS)}
    for name, metric in METRICS.items():
        assert rows[name] == (metric.kind, metric.labels, metric.description), name


def test_sec_61_no_request_value_becomes_a_label() -> None:
    """Whatever requests say (paths, hosts, issuers, subjects, roles, keys),
    every label value comes from the code or the policy: the series stay
    bounded, and no credential or request text reaches /metrics."""
    policy = load_policy(str(ACCEPTANCE / "policy.yaml"))
    state = PolicyState(policy, SystemClock())
    service = CheckService(state, Telemetry(sources=lambda: {"caches": state.cache_sources()}))
    sent: list[str] = []
    for i in range(40):
        marker = f"zq{i}x{secrets.token_hex(4)}"
        sent.append(marker)
        headers = {"x-tenant": marker, "authorization": f"Bearer {token(claims(sub=marker, roles=[marker]))}"}
        if i % 4 == 1:
            headers["authorization"] = f"Bearer {token(claims(iss=f'https://{marker}.example'))}"
        if i % 4 == 2:
            headers = {"x-api-key": marker}
        if i % 4 == 3:
            headers["authorization"] = f"Bearer {marker}"
        request = check_request_json("GET", f"/api/{marker}", host=f"{marker}.example.com", headers=headers)
        service.check_sync(json_format.ParseDict(request, CheckRequest()).SerializeToString(), None)
    text = metrics.render(metrics.merge([service.telemetry.snapshot()])).decode()
    assert not [marker for marker in sent if marker in text]
    names = {rule.name for rule in (*policy.deny_rules, *policy.allow_rules)} | set(policy.roles)
    bounded = ({reason.value for reason in Reason} | {issuer.name for issuer in policy.issuers}
               | {"api_key", "peer", "none", "grpc", "http", "allow", "deny", "hit", "miss", "decisions",
                  "tokens", "0", ""} | names)
    values = {value for series in service.telemetry.snapshot().values() for labels in series for _, value in labels}
    assert values <= bounded, values - bounded
