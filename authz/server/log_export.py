"""Decision logs as OpenTelemetry log records, beside the JSON lines.

Off unless asked: ``OTEL_LOGS_EXPORTER=otlp`` (to the OTLP endpoint of
``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``, gRPC,
or HTTP with ``OTEL_EXPORTER_OTLP_LOGS_PROTOCOL`` / ``..._PROTOCOL=http/protobuf``)
or ``console``. ``OTEL_SDK_DISABLED=true`` turns it off. The JSON lines on
stdout stay as they are; each exported record carries the same line as its
body (a map), the fields a log search filters on as attributes, and the
trace context of the line (authz's span when tracing is on, else the span the
request carried), so the backend links the record to its trace. Only the
decisions the decision log writes are exported (``--decision-log``,
``--decision-log-sample``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry._logs import Logger, LogRecord, SeverityNumber
from opentelemetry.trace import TraceFlags

from authz.server.tracing import otlp_over_http

LOGGER_NAME = "authz.decisions"
#: Record fields sent as attributes too (name in the record -> attribute).
ATTRIBUTES = {
    "reason": "authz.reason", "rule": "authz.rule", "door": "authz.door", "worker": "authz.worker",
    "policy_generation": "authz.policy_generation", "cache": "authz.server.cache",
    "status": "http.response.status_code",
    "request_id": "envoy.request_id", "client_address": "client.address", "method": "http.request.method",
    "path": "url.path",
}


def wanted(environ: Mapping[str, str] = os.environ) -> str | None:
    """The exporter the environment asks for ("otlp", "console"), or None."""
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    exporter = environ.get("OTEL_LOGS_EXPORTER", "").strip().lower()
    return exporter if exporter in ("otlp", "console") else None


def logger_from_environment(environ: Mapping[str, str] = os.environ) -> Logger | None:
    """An OpenTelemetry logger exporting as the environment says, or None."""
    exporter_name = wanted(environ)
    if exporter_name is None:
        return None
    from opentelemetry.sdk._logs import LoggerProvider, export
    from opentelemetry.sdk.resources import Resource

    exporter: Any
    if exporter_name == "console":
        # Older opentelemetry-sdk releases name it ConsoleLogExporter.
        exporter = (getattr(export, "ConsoleLogRecordExporter", None) or export.ConsoleLogExporter)()
    else:
        if otlp_over_http(environ, "LOGS"):
            from opentelemetry.exporter.otlp.proto.http._log_exporter import (
                OTLPLogExporter as HttpExporter,
            )

            exporter = HttpExporter()
        else:
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
                OTLPLogExporter as GrpcExporter,
            )

            exporter = GrpcExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", "authz")}))
    provider.add_log_record_processor(export.BatchLogRecordProcessor(exporter))
    return provider.get_logger(LOGGER_NAME)


def emit(logger: Logger, record: Mapping[str, Any]) -> None:
    """Send one decision log line (``record``, as written to stdout)."""
    trace_id, span_id = record.get("trace_id"), record.get("span_id") or record.get("parent_span_id")
    attributes = {name: record[field] for field, name in ATTRIBUTES.items() if record.get(field) is not None}
    attributes["authz.decision"] = "allow" if record.get("allowed") else "deny"
    logger.emit(LogRecord(
        timestamp=time.time_ns(),
        trace_id=int(trace_id, 16) if trace_id and span_id else None,
        span_id=int(span_id, 16) if trace_id and span_id else None,
        trace_flags=TraceFlags(TraceFlags.SAMPLED) if trace_id and span_id else None,
        severity_text="INFO", severity_number=SeverityNumber.INFO,
        body=dict(record), attributes=attributes))
