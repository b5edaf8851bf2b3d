"""Outside data in conditions (authz.data, ``data:``), decided by the engine
against real local endpoints (testkit/endpoint.py): what is called, when,
with what, for how long, and the failures."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authz.config import load_policy
from authz.engine import CallPending, Engine
from authz.errors import ConfigError, Reason
from testkit.endpoint import Endpoint, Seen
from testkit.requests import request

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def plans(seen: Seen) -> tuple[int, Any]:
    tenant = seen.path.rsplit("/", 1)[-1]
    return 200, {"tier": "gold" if tenant.startswith("gold") else "free", "tenant": tenant}


def policy_text(url: str, *, source: str = "", extra_rules: str = "", top: str = "") -> str:
    return f"""\
version: 1
api_keys:
  keys:
    - {{subject: gold-acme, sha256: "{hashlib.sha256(b'k-gold').hexdigest()}", roles: [member]}}
    - {{subject: free-bob, sha256: "{hashlib.sha256(b'k-free').hexdigest()}", roles: [member]}}
    - {{subject: "gold/../admin", sha256: "{hashlib.sha256(b'k-odd').hexdigest()}", roles: [member]}}
data:
  plans:
    url: {url}/tenants/{{identity.subject}}
    headers:
      authorization: {{file: plans.token, prefix: "Bearer "}}
      x-static: literal
    cache_ttl: 20s
    timeout: 500ms
{source}
roles:
  member:
    - {{paths: ["/api/reports"], when: 'data.plans.tier == "gold"'}}
    - {{paths: ["/api/public"]}}
{extra_rules}
{top}
"""


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    with Endpoint(plans) as server:
        yield server


def engine_for(tmp_path: Path, text: str) -> Engine:
    (tmp_path / "plans.token").write_text("plans-secret\n")
    (tmp_path / "policy.yaml").write_text(text)
    return Engine(load_policy(str(tmp_path / "policy.yaml")))


def decide(engine: Engine, key: str, path: str = "/api/reports", headers: dict[str, str] | None = None) -> Any:
    return engine.decide_blocking(request(path=path, headers={"x-api-key": key, **(headers or {})}), timeout=5)


def test_a_rule_reads_the_answer_of_a_call_built_from_the_identity(tmp_path: Path, endpoint: Endpoint) -> None:
    engine = engine_for(tmp_path, policy_text(endpoint.url))
    assert decide(engine, "k-gold", headers={"traceparent": TRACEPARENT}).allowed
    assert decide(engine, "k-free").reason is Reason.NO_PERMISSION
    first = endpoint.seen[0]
    assert (first.method, first.path) == ("GET", "/tenants/gold-acme")
    assert first.headers["authorization"] == "Bearer plans-secret" and first.headers["x-static"] == "literal"
    assert first.headers["traceparent"] == TRACEPARENT  # tracing off: the request's own context, passed on


def test_a_field_value_is_encoded_whole(tmp_path: Path, endpoint: Endpoint) -> None:
    engine = engine_for(tmp_path, policy_text(endpoint.url))
    decide(engine, "k-odd")
    assert endpoint.seen[0].path == "/tenants/gold%2F..%2Fadmin"


def test_answers_are_cached_by_the_exact_call_and_bound_the_decision(tmp_path: Path, endpoint: Endpoint) -> None:
    engine = engine_for(tmp_path, policy_text(endpoint.url))
    now = time.time()
    decision = decide(engine, "k-gold")
    assert decision.valid_until is not None and decision.valid_until <= now + 21
    for _ in range(3):
        assert decide(engine, "k-gold").allowed
    assert endpoint.count() == 1
    decide(engine, "k-free")
    assert endpoint.count() == 2


def test_only_sources_that_rules_which_may_apply_read_are_called(tmp_path: Path, endpoint: Endpoint) -> None:
    engine = engine_for(tmp_path, policy_text(endpoint.url))
    assert decide(engine, "k-gold", path="/api/public").allowed
    assert endpoint.count() == 0


def test_several_sources_are_called_at_once(tmp_path: Path, endpoint: Endpoint) -> None:
    with Endpoint(lambda seen: (200, {"ok": True})) as other:
        other.mode = endpoint.mode = "gate"
        text = policy_text(endpoint.url, source=f"""\
  flags:
    url: {other.url}/flags
    timeout: 5s
""", extra_rules="""\
rules:
  - {name: flagged, effect: allow, paths: ["/api/reports"], when: 'data.flags.ok && data.plans.tier == "gold"'}
""").replace("timeout: 500ms", "timeout: 5s")
        engine = engine_for(tmp_path, text)
        with pytest.raises(CallPending) as pending:
            engine.decide(request(path="/api/reports", headers={"x-api-key": "k-gold"}))
        assert endpoint.wait_for(1) and other.wait_for(1)  # both under way before either answers
        other.gate.set()
        endpoint.gate.set()
        pending.value.future.result(timeout=10)
        assert engine.decide(request(path="/api/reports", headers={"x-api-key": "k-gold"}), may_wait=False).allowed


@pytest.mark.parametrize("mode", ["500", "garbage", "huge", "hang", "drop"])
def test_sec_84_a_failing_source_denies_within_its_timeout(tmp_path: Path, endpoint: Endpoint, mode: str) -> None:
    endpoint.mode = mode
    engine = engine_for(tmp_path, policy_text(endpoint.url))
    started = time.monotonic()
    decision = decide(engine, "k-gold")
    assert decision.reason is Reason.DATA_UNAVAILABLE and not decision.cacheable
    assert time.monotonic() - started < 4


def test_a_failing_source_yields_its_fallback_value(tmp_path: Path, endpoint: Endpoint) -> None:
    endpoint.mode = "500"
    text = policy_text(endpoint.url, source="    on_error: {value: {tier: gold}}")
    assert decide(engine_for(tmp_path, text), "k-free").allowed


def test_sec_84_a_slow_source_stalls_no_check_that_does_not_need_it(tmp_path: Path, endpoint: Endpoint) -> None:
    endpoint.mode = "hang"
    engine = engine_for(tmp_path, policy_text(endpoint.url))
    assert decide(engine, "k-gold", path="/api/public").allowed  # answered without waiting
    assert endpoint.count() == 0


def refused(tmp_path: Path, text: str) -> str:
    (tmp_path / "plans.token").write_text("plans-secret\n")
    (tmp_path / "policy.yaml").write_text(text)
    with pytest.raises(ConfigError) as error:
        load_policy(str(tmp_path / "policy.yaml"))
    return str(error.value)


@pytest.mark.parametrize(("url", "message"), [
    ("https://plans.example.com/t/{request.headers['x-api-key']}", "reads the credential header 'x-api-key'"),
    ("https://plans.example.com/t/{request.headers['authorization']}", "reads the credential header"),
    ("https://plans.example.com/t/{string(size(identity.claims))}", "reads identity.claims as a whole"),
    ("https://plans.example.com/t/{request.headers['cookie']}", "reads the credential header 'cookie'"),
    ("http://plans.example.com/t/{identity.subject}", "must be an https URL"),
    ("{identity.subject}/t", "url must begin with a fixed scheme://host"),
    ("https://plans.example.com{identity.subject}", "url must begin with a fixed scheme://host"),
    ("https://user:pw@plans.example.com/t", "url must begin with a fixed scheme://host"),
    ("https://plans.example.com/t/{identity.subject", "a '{' that is never closed"),
])
def test_sec_85_urls_that_could_carry_a_credential_or_go_astray_are_refused(tmp_path: Path, url: str,
                                                                             message: str) -> None:
    text = policy_text("X").replace("url: X/tenants/{identity.subject}", f'url: "{url}"')
    found = refused(tmp_path, text)
    assert re.search(rf"policy.yaml:9: [^\n]*{re.escape(message)}", found), found


def test_plain_http_to_a_remote_host_needs_the_opt_in(tmp_path: Path) -> None:
    text = policy_text("http://plans.example.com", source="    allow_insecure_http: true")
    assert engine_for(tmp_path, text).policy.data is not None


def test_sec_86_a_source_no_rule_reads_and_unknown_names_are_refused(tmp_path: Path, endpoint: Endpoint) -> None:
    text = policy_text(endpoint.url, source=f"""\
  unused:
    url: {endpoint.url}/x
""", extra_rules="""\
rules:
  - {name: typo, effect: deny, when: 'data.plan.tier == "free"'}
""", top="""\
response:
  headers:
    x-tier: data.plans.tier
""")
    found = refused(tmp_path, text)
    assert re.search(r"policy.yaml:\d+: [^\n]*data source 'unused' is read by no rule", found), found
    assert re.search(r"policy.yaml:\d+: [^\n]*data.plan: no data source has this name", found), found
    assert re.search(r"policy.yaml:\d+: [^\n]*data is read by the when of rules and permissions only", found)


def test_a_body_is_a_json_object_of_expressions(tmp_path: Path, endpoint: Endpoint) -> None:
    endpoint.answer = lambda seen: (200, {"tier": json.loads(seen.body)["who"].split("-")[0]})
    text = policy_text(endpoint.url, source="""\
    method: POST
    body: {who: identity.subject, n: "1 + 1"}
""")
    assert decide(engine_for(tmp_path, text), "k-gold").allowed
    sent = endpoint.seen[0]
    assert sent.method == "POST" and json.loads(sent.body) == {"n": 2, "who": "gold-acme"}
    assert sent.headers["content-type"] == "application/json"


def test_each_call_is_a_client_span_of_the_requests_trace(tmp_path: Path, endpoint: Endpoint) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from authz.outside.calls import trace_calls

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_calls(provider.get_tracer("test"))
    try:
        engine = engine_for(tmp_path, policy_text(endpoint.url))
        assert decide(engine, "k-gold", headers={"traceparent": TRACEPARENT}).allowed
    finally:
        trace_calls(None)
    (span,) = exporter.get_finished_spans()
    assert span.name == "authz.outside.data" and span.kind is SpanKind.CLIENT
    assert dict(span.attributes or {}) == {"authz.outside.name": "plans", "authz.outside.kind": "data",
                                           "authz.outside.outcome": "success"}
    assert format(span.context.trace_id, "032x") == TRACEPARENT.split("-")[1]
    assert span.parent is not None and format(span.parent.span_id, "016x") == TRACEPARENT.split("-")[2]
    sent = endpoint.seen[0].headers["traceparent"]  # the call carries the span's own context
    assert sent.split("-")[1] == TRACEPARENT.split("-")[1]
    assert sent.split("-")[2] == format(span.context.span_id, "016x")
