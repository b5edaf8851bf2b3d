"""deploy/monitoring: the alerts and recording rules pass their promtool unit
tests, every alert has a runbook in docs/operations.md, the rules and the
Grafana dashboard query only metrics authz exports, and the Component wires
into the Kubernetes base through deploy/overlays/monitoring.

The resources themselves are validated against prometheus-operator's CRD
schemas by tests/deploy/test_manifests.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.server.telemetry import METRICS
from testkit.paths import REPO
from tests.deploy.manifests import COMPONENT, DEPLOY, KUSTOMIZATION, find, load_docs

MONITORING = DEPLOY / "monitoring"
OVERLAY = DEPLOY / "overlays" / "monitoring"
RULE_TESTS = Path(__file__).parent / "promtool" / "authz_rules_test.yaml"
DASHBOARD = MONITORING / "dashboards" / "authz.json"
OPERATIONS = REPO / "docs" / "operations.md"
#: Envoy's ext_authz filter statistics, as Envoy's Prometheus endpoint names them.
ENVOY_SERIES = {"envoy_http_ext_authz_ok", "envoy_http_ext_authz_denied", "envoy_http_ext_authz_error"}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian: apt-get install prometheus; scripts/test installs it)")


def rule_spec() -> dict[str, Any]:
    return find("PrometheusRule", "authz", under=MONITORING)["spec"]  # type: ignore[no-any-return]


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_spec()["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def series_names(expr: str) -> set[str]:
    """The metric and recording-rule names a PromQL expression reads."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    names = set(re.findall(r"\b(?:authz_|envoy_)[a-z0-9_]+\b|\b[a-z_]+:[a-z0-9_:]+\b", without_strings))
    return {name for name in names if not name.endswith(":")}


def exported(name: str) -> bool:
    """True if authz's /metrics carries ``name`` (a histogram's series included)."""
    if name in METRICS:
        return True
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if name.endswith(suffix) and base in METRICS and METRICS[base].kind == "histogram":
            return True
    return False


def run_promtool(directory: Path, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    (directory / "authz_rules.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    shutil.copy(RULE_TESTS, directory / RULE_TESTS.name)
    return subprocess.run(["promtool", "test", "rules", RULE_TESTS.name], cwd=directory, capture_output=True,
                          text=True, timeout=120, check=False)


# -- the rules -------------------------------------------------------------------


@needs_promtool
def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    result = run_promtool(tmp_path, rule_spec())
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    spec = rule_spec()
    (alert,) = [rule for group in spec["groups"] for rule in group["rules"] if rule.get("alert") == "AuthzKeySetStale"]
    alert["expr"] = alert["expr"].replace("> 3600", "> 7200")
    result = run_promtool(tmp_path, spec)
    assert result.returncode != 0 and "AuthzKeySetStale" in result.stdout + result.stderr


def test_every_alert_has_a_promtool_test() -> None:
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test.get("alert_rule_test", ())}
    assert tested == {alert["alert"] for alert in alerts()}


def test_the_alerts_page_on_what_hurts_users() -> None:
    by_name = {alert["alert"]: alert["expr"] for alert in alerts()}
    wanted = {
        "AuthzInternalErrors": 'reason="internal_error"', "AuthzJwksUnavailable": 'reason="jwks_unavailable"',
        "AuthzEnvoyExtAuthzErrors": "envoy_ext_authz_errors", "AuthzCheckLatencyHigh": "authz_check_duration_seconds",
        "AuthzKeySetStale": "authz_jwks_key_set_age_seconds", "AuthzKeySetFetchesFailing": "authz_jwks_fetches_total",
        "AuthzConfigReloadFailing": "authz_config_reloads_total",
        "AuthzWorkersRestarting": "authz_worker_restarts_total",
        "AuthzChecksNearConcurrencyLimit": "authz_checks_in_flight_limit",
        "AuthzUntrustedCallers": 'reason="untrusted_caller"',
    }
    assert set(by_name) == set(wanted)
    recorded = {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}
    for name, needle in wanted.items():
        expr = by_name[name]
        expanded = expr + "".join(body for record, body in recorded.items() if record in expr)
        assert needle in expanded, name


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown page."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#+ (.*)", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_every_alert_links_its_runbook() -> None:
    anchors = _anchors(OPERATIONS.read_text(encoding="utf-8"))
    for alert in alerts():
        annotations, labels = alert["annotations"], alert["labels"]
        assert labels["severity"] in ("critical", "warning"), alert["alert"]
        assert annotations["summary"] and annotations["description"], alert["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/operations.md", alert["alert"]
        assert anchor == alert["alert"].lower() and anchor in anchors, f"no runbook section for {alert['alert']}"


def test_rules_read_only_exported_metrics_and_their_own_records() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for rule in rules():
        for name in series_names(rule["expr"]):
            assert exported(name) or name in recorded or name in ENVOY_SERIES, (rule.get("alert") or rule["record"],
                                                                                name)


# -- the dashboard ----------------------------------------------------------------


def test_dashboard_queries_only_metrics_authz_exports() -> None:
    names = {name for expr in dashboard_exprs() for name in series_names(expr)}
    unknown = {name for name in names if not exported(name) and name not in ENVOY_SERIES}
    assert not unknown, f"the dashboard queries metrics authz does not export: {sorted(unknown)}"
    queried = {name.removesuffix("_bucket") for name in names}
    # decisions by outcome, reason and rule; latency by door; caches; key sets; reloads; workers
    for wanted in ("authz_decisions_total", "authz_rule_decisions_total", "authz_check_duration_seconds",
                   "authz_cache_requests_total", "authz_cache_bytes", "authz_jwks_key_set_age_seconds",
                   "authz_config_reloads_total", "authz_workers", "authz_worker_restarts_total", "authz_build_info"):
        assert wanted in queried, wanted
    assert any("authz_check_duration_seconds_bucket" in e and "door" in e for e in dashboard_exprs())


def test_the_dashboard_check_finds_an_unknown_metric() -> None:
    assert not exported("authz_check_duration_seconds_buckets")
    assert not exported("authz_decisions_total_bucket")  # a counter has no buckets
    assert series_names('sum(rate(authz_decision_total{reason="x"}[5m])) / ns:authz_x:ratio') == {
        "authz_decision_total", "ns:authz_x:ratio"}


def test_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] and board["title"]
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    variables = {variable["name"] for variable in board["templating"]["list"]}
    assert {"datasource", "namespace"} <= variables
    for panel in panels:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert 'namespace=~"$namespace"' in target["expr"], panel["title"]


@needs_promtool
def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    exprs = [e.replace("$__rate_interval", "5m").replace("$namespace", ".*") for e in dashboard_exprs()]
    rule_file = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}:check", "expr": e} for i, e in enumerate(exprs)]}]}
    (tmp_path / "dashboard_rules.yaml").write_text(yaml.safe_dump(rule_file), encoding="utf-8")
    result = subprocess.run(["promtool", "check", "rules", "dashboard_rules.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# -- wiring ------------------------------------------------------------------------


def _kustomization(directory: Path) -> dict[str, Any]:
    (body,) = [doc.body for doc in load_docs(directory / "kustomization.yaml")]
    return body


def test_the_component_and_its_overlay() -> None:
    component = _kustomization(MONITORING)
    assert (component["apiVersion"], component["kind"]) == COMPONENT
    assert component["resources"] == ["servicemonitor.yaml", "prometheusrule.yaml"]
    (generator,) = component["configMapGenerator"]
    assert generator["files"] == ["dashboards/authz.json"]
    assert generator["options"]["labels"]["grafana_dashboard"] == "1"
    # The PodMonitor is the documented alternative, never applied beside the ServiceMonitor.
    assert (MONITORING / "podmonitor.yaml").is_file() and "podmonitor.yaml" not in component["resources"]
    overlay = _kustomization(OVERLAY)
    assert (overlay["apiVersion"], overlay["kind"]) == KUSTOMIZATION
    assert [(OVERLAY / r).resolve() for r in overlay["resources"]] == [(DEPLOY / "kubernetes").resolve()]
    assert [(OVERLAY / c).resolve() for c in overlay["components"]] == [MONITORING.resolve()]
    assert overlay["namespace"] == _kustomization(DEPLOY / "kubernetes")["namespace"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (for `kubectl kustomize`) is not installed")
def test_the_overlay_renders_the_base_and_the_monitoring() -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True,
                              timeout=60, check=False)
    assert rendered.returncode == 0, rendered.stderr
    out = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in out}
    base = {(doc.body["kind"], doc.name) for name in _kustomization(DEPLOY / "kubernetes")["resources"]
            for doc in load_docs(DEPLOY / "kubernetes" / name)}
    assert kinds == base | {("ServiceMonitor", "authz"), ("PrometheusRule", "authz"), ("ConfigMap", "authz-dashboard")}
    for doc in out:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "authz", doc["kind"]
    (board,) = [doc for doc in out if doc["metadata"]["name"] == "authz-dashboard"]
    assert json.loads(board["data"]["authz.json"]) == dashboard()


def test_the_monitors_select_authz_and_its_metrics_port() -> None:
    service = find("Service", "authz", under=DEPLOY / "kubernetes")
    deployment = find("Deployment", "authz", under=DEPLOY / "kubernetes")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    service_monitor = find("ServiceMonitor", "authz", under=MONITORING)["spec"]
    assert service_monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = service_monitor["endpoints"]
    port = {p["name"]: p for p in service["spec"]["ports"]}[endpoint["port"]]
    assert port["port"] == 8181 and endpoint["path"] == "/metrics"
    pod_monitor = find("PodMonitor", "authz", under=MONITORING)["spec"]
    assert pod_monitor["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (pod_endpoint,) = pod_monitor["podMetricsEndpoints"]
    assert pod_endpoint["port"] in {p["name"] for p in container["ports"]} and pod_endpoint["path"] == "/metrics"
    assert "--http-address=0.0.0.0:8181" in container["args"]
