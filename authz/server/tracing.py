"""Tracing: one span per Check, joined to the trace Envoy forwards.

Off unless the standard OpenTelemetry environment asks for it: an OTLP
endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``..._TRACES_ENDPOINT``) or
``OTEL_TRACES_EXPORTER`` (``otlp`` or ``console``); ``OTEL_SDK_DISABLED=true``
or ``OTEL_TRACES_EXPORTER=none`` turn it off. Sampling (``OTEL_TRACES_SAMPLER``),
the service name (``OTEL_SERVICE_NAME``, default ``authz``) and the exporter
settings are read by the SDK itself. When off, Checks pay nothing for it.

The parent is taken from the request's own headers as Envoy forwards them in
the CheckRequest: W3C ``traceparent``/``tracestate`` or B3 (``x-b3-*``, ``b3``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import SpanKind, Tracer, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SPAN_NAME = "authz.Check"
_PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), B3MultiFormat(), B3SingleFormat()])


def otlp_over_http(environ: Mapping[str, str], signal: str) -> bool:
    """Whether the OTLP exporter of ``signal`` (TRACES, LOGS) speaks HTTP
    rather than gRPC, as OpenTelemetry's environment variables say."""
    protocol = (environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "grpc")
    return protocol.startswith("http")


def wanted(environ: Mapping[str, str] = os.environ) -> str | None:
    """The exporter the environment asks for ("otlp", "console"), or None."""
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter in ("otlp", "console"):
        return exporter
    if exporter == "none":
        return None
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return "otlp"
    return None


def tracer_from_environment(environ: Mapping[str, str] = os.environ) -> Tracer | None:
    """A tracer exporting as the environment says, or None (tracing off)."""
    exporter_name = wanted(environ)
    if exporter_name is None:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    else:
        if otlp_over_http(environ, "TRACES"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )

            exporter = HttpExporter()
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            exporter = GrpcExporter()
    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", "authz")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider.get_tracer("authz")


def parent_context(headers: Mapping[str, str]) -> Context:
    """The trace context carried by the request's headers (empty if none)."""
    return _PROPAGATOR.extract(carrier=headers)


def start_check_span(tracer: Tracer, headers: Mapping[str, str], attributes: dict[str, Any], *,
                     start_time: int | None = None) -> Any:
    return tracer.start_span(SPAN_NAME, context=parent_context(headers), kind=SpanKind.SERVER,
                             attributes=attributes, start_time=start_time)




def carried_ids(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(trace id, span id) of the trace context the request carries, as W3C
    hex (32 and 16 digits), or (None, None)."""
    context = get_current_span(parent_context(headers)).get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
