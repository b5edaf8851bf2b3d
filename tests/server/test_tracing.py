"""A Check span joins the trace Envoy forwards (W3C traceparent or B3)."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from authz.config import load_policy
from authz.engine import SystemClock
from authz.server.service import CheckService, PolicyState
from authz.server.telemetry import Telemetry
from authz.server.tracing import SPAN_NAME, tracer_from_environment, wanted
from authz.wire.grpc import CheckRequest
from testkit.paths import ACCEPTANCE
from testkit.tokens import claims, token

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def _service() -> tuple[CheckService, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    policy = load_policy(str(ACCEPTANCE / "policy.yaml"))
    service = CheckService(PolicyState(policy, SystemClock()), Telemetry(), tracer=provider.get_tracer("test"))
    return service, exporter


def _raw(headers: dict[str, str]) -> bytes:
    message = CheckRequest()
    http = message.attributes.request.http
    message.attributes.source.address.socket_address.address = "198.51.100.7"
    http.method, http.path, http.host = "GET", "/api/orders/1?secret=x", "api.example.com"
    http.headers.update({":path": http.path, "x-request-id": "rid-7", "x-tenant": "t1", **headers})
    return bytes(message.SerializeToString())


def test_span_joins_the_traceparent_of_the_request() -> None:
    service, exporter = _service()
    raw = _raw({"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "authorization": f"Bearer {token(claims())}"})
    asyncio.run(service.check(raw, None))
    asyncio.run(service.check(raw, None))  # a cache hit gets its span too
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [SPAN_NAME, SPAN_NAME]
    first, second = spans
    assert first.context is not None and first.parent is not None
    assert format(first.context.trace_id, "032x") == TRACE_ID
    assert format(first.parent.span_id, "016x") == PARENT_ID
    attributes = dict(first.attributes or {})
    assert attributes["authz.decision"] == "allow"
    assert attributes["authz.reason"] == "allowed"
    assert attributes["authz.rule"] == "orders-reader"
    assert attributes["authz.issuer"] == "corp"
    assert attributes["authz.server.cache"] == "miss"
    assert dict(second.attributes or {})["authz.server.cache"] == "hit"
    assert attributes["url.path"] == "/api/orders/1"  # never the query
    assert first.start_time is not None and first.end_time is not None and first.end_time > first.start_time


def test_span_joins_a_b3_trace() -> None:
    service, exporter = _service()
    raw = _raw({"x-b3-traceid": TRACE_ID, "x-b3-spanid": PARENT_ID, "x-b3-sampled": "1"})
    asyncio.run(service.check(raw, None))
    (span,) = exporter.get_finished_spans()
    assert span.context is not None
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert dict(span.attributes or {})["authz.reason"] == "missing_credential"


def test_without_a_parent_a_new_trace_starts() -> None:
    service, exporter = _service()
    asyncio.run(service.check(_raw({}), None))
    (span,) = exporter.get_finished_spans()
    assert span.parent is None


def test_tracing_is_off_unless_the_environment_asks() -> None:
    assert wanted({}) is None
    assert tracer_from_environment({}) is None
    assert wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}) == "otlp"
    assert wanted({"OTEL_TRACES_EXPORTER": "console"}) == "console"
    assert wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}) is None
    assert wanted({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) is None
