"""A decision log line joins the rest of what an operator has: its trace and
span (W3C ids), Envoy's request id, the door and worker that answered, the
policy generation, the client's address as authz trusts it and the
destination; and it still carries no credential."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from authz.config import load_policy
from authz.engine import SystemClock
from authz.server.decision_log import DecisionLog
from authz.server.service import CheckService, PolicyState
from authz.server.telemetry import Telemetry
from authz.wire.grpc import GRPC, CheckRequest
from authz.wire.http import HttpDoor, HttpDoorSettings
from testkit.paths import ACCEPTANCE
from testkit.tokens import claims, token

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
DOOR = HttpDoor(HttpDoorSettings("/authz", forwarded_hops=1))


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


def _service(*, traced: bool, worker: int = 3) -> tuple[CheckService, _Lines, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    handler = _Lines()
    logger = logging.getLogger(f"test.decisions.{id(handler)}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    policy = load_policy(str(ACCEPTANCE / "policy.yaml"))
    service = CheckService(PolicyState(policy, SystemClock(), doors=(GRPC, DOOR)), Telemetry(),
                           decision_log=DecisionLog("all", logger=logger, worker=worker),
                           tracer=provider.get_tracer("test") if traced else None)
    return service, handler, exporter


def _grpc(headers: dict[str, str]) -> bytes:
    message = CheckRequest()
    attributes = message.attributes
    attributes.source.address.socket_address.address = "198.51.100.7"
    attributes.destination.address.socket_address.address = "10.0.0.5"
    attributes.destination.address.socket_address.port_value = 8443
    http = attributes.request.http
    http.method, http.path, http.host = "GET", "/api/orders/1?access_token=secret", "api.example.com"
    http.headers.update({":path": http.path, "x-request-id": "rid-7", "x-tenant": "t1", **headers})
    return bytes(message.SerializeToString())


def test_a_log_line_joins_its_span() -> None:
    service, log, exporter = _service(traced=True)
    bearer = token(claims())
    raw = _grpc({"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "authorization": f"Bearer {bearer}"})
    asyncio.run(service.check(raw, None))
    asyncio.run(service.check(raw, None))  # a cache hit is logged and traced alike
    spans = exporter.get_finished_spans()
    assert len(spans) == len(log.lines) == 2
    for span, line in zip(spans, log.lines, strict=True):
        assert span.context is not None
        assert line["trace_id"] == format(span.context.trace_id, "032x") == TRACE_ID
        assert line["span_id"] == format(span.context.span_id, "016x")
        assert line["parent_span_id"] == PARENT_ID
        assert dict(span.attributes or {})["envoy.request_id"] == line["request_id"] == "rid-7"
    first = log.lines[0]
    assert (first["door"], first["worker"], first["cache"]) == ("grpc", 3, "miss")
    assert first["policy_generation"] == service.state.policy.generation
    assert (first["client_address"], first["destination"]) == ("198.51.100.7", "10.0.0.5:8443")
    text = json.dumps(log.lines)
    assert bearer not in text and "secret" not in text


def test_without_tracing_the_line_names_the_trace_the_request_carries() -> None:
    service, log, _exporter = _service(traced=False)
    b3 = {"x-b3-traceid": TRACE_ID, "x-b3-spanid": PARENT_ID, "x-b3-sampled": "1"}
    asyncio.run(service.check(_grpc(b3), None))  # no credential: a denial
    (line,) = log.lines
    assert (line["trace_id"], line["span_id"], line["parent_span_id"]) == (TRACE_ID, None, PARENT_ID)
    asyncio.run(service.check(_grpc({}), None))
    assert (log.lines[1]["trace_id"], log.lines[1]["parent_span_id"]) == (None, None)


def test_the_http_door_logs_the_trusted_client_address_and_no_destination() -> None:
    service, log, _exporter = _service(traced=False, worker=0)
    headers = [(b"host", b"api.example.com"), (b"x-request-id", b"rid-9"), (b"x-tenant", b"t1"),
               (b"x-forwarded-for", b"192.0.2.99, 203.0.113.4"),
               (b"traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01".encode())]
    scope = {"type": "http", "method": "GET", "raw_path": b"/authz/api/orders/1", "query_string": b"",
             "headers": headers}
    asyncio.run(service.check_async(DOOR, scope, 1.0))
    (line,) = log.lines
    assert (line["door"], line["worker"], line["request_id"]) == ("http", 0, "rid-9")
    # One trusted hop: the entry Envoy appended, not what the client wrote before it.
    assert (line["client_address"], line["destination"]) == ("203.0.113.4", None)
    assert (line["trace_id"], line["parent_span_id"]) == (TRACE_ID, PARENT_ID)


def test_otel_log_export_beside_json_lines_joins_the_span() -> None:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    provider = LoggerProvider()
    exported = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider.add_log_record_processor(SimpleLogRecordProcessor(exported))
    service, log, spans = _service(traced=True)
    assert service.decision_log is not None
    service.decision_log.otel = provider.get_logger("authz.decisions")
    raw = _grpc({"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})  # no credential: a denial
    asyncio.run(service.check(raw, None))
    (line,), (span,) = log.lines, spans.get_finished_spans()
    (record,) = [item.log_record for item in exported.get_finished_logs()]
    assert span.context is not None
    assert (record.trace_id, record.span_id) == (span.context.trace_id, span.context.span_id)
    assert record.body == line  # the same line as stdout's
    attributes = dict(record.attributes or {})
    assert attributes["authz.reason"] == "missing_credential" and attributes["authz.decision"] == "deny"
    assert attributes["envoy.request_id"] == "rid-7" and attributes["client.address"] == "198.51.100.7"


def test_otel_log_export_is_off_unless_asked() -> None:
    from authz.server.log_export import logger_from_environment, wanted

    assert wanted({}) is None and wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}) is None
    assert wanted({"OTEL_LOGS_EXPORTER": "otlp"}) == "otlp"
    assert wanted({"OTEL_LOGS_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}) is None
    assert logger_from_environment({}) is None
    assert logger_from_environment({"OTEL_LOGS_EXPORTER": "console"}) is not None
