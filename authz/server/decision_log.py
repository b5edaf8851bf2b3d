"""Decision logs: one JSON line per decision, for "why was I denied?".

On by default for denials, off for allows (``--decision-log``), with a
sample rate for allows. A line never contains a credential: no headers are
logged, the path is logged without its query (tokens are sometimes passed
there), and identities appear only as kind, subject and issuer.

Each line joins what else the operator has: the trace (``trace_id``; the
``span_id`` of authz's own ``authz.Check`` span when tracing is on, and
``parent_span_id``, the span the request carried, W3C or B3), Envoy's
``request_id``, the ``door`` and ``worker`` that answered, the
``policy_generation`` that decided, the client's address as authz saw it
(``client_address``: Envoy's downstream address, or for the HTTP door the
``x-forwarded-for`` entry ``--trusted-forwarded-hops`` trusts; null when
unknown) and the ``destination`` (address:port Envoy received the request
on; null through the HTTP door, which is not told it). With
``OTEL_LOGS_EXPORTER`` set, each line is also sent as an OpenTelemetry log
record (:mod:`authz.server.log_export`).
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

from authz.decision import Decision

LOGGER = "authz.decisions"


def configure_stream(stream: Any = None) -> logging.Logger:
    """The decision logger, writing bare JSON lines (no prefix) to stdout."""
    logger = logging.getLogger(LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(stream or sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return logger


@dataclass(frozen=True, slots=True)
class Where:
    """Who asked and where: the fields that join a line to traces, Envoy's
    access log and the process that answered."""

    door: str = "grpc"
    client_address: str | None = None
    destination: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    policy_generation: int | None = None


class DecisionLog:
    """Which decisions to log (``mode``: none, denials, all) and the writer."""

    def __init__(self, mode: str = "denials", allow_sample: float = 1.0, *, logger: logging.Logger | None = None,
                 worker: int = 0, otel: Any = None) -> None:
        if mode not in ("none", "denials", "all"):
            raise ValueError(f"decision log mode {mode!r}: use none, denials or all")
        self.denials = mode in ("denials", "all")
        self.allows = mode == "all"
        self.allow_sample = allow_sample
        self.logger = logger or logging.getLogger(LOGGER)
        self.worker = worker
        #: An OpenTelemetry logger each line is also sent to (authz.server.log_export), or None.
        self.otel = otel

    def wanted(self, decision: Decision) -> bool:
        if decision.allowed and not decision.dry_run_denials:
            return self.allows and (self.allow_sample >= 1.0 or random.random() < self.allow_sample)
        return self.denials  # denials, and dry-run "would deny"

    def write(
        self, decision: Decision, *, request_id: str | None, method: str, host: str, path: str,
        latency: float, cache: str, where: Where = Where(),
    ) -> None:
        identity = decision.identity
        record: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
            "type": "decision",
            "request_id": request_id,
            "trace_id": where.trace_id,
            "span_id": where.span_id,
            "parent_span_id": where.parent_span_id,
            "door": where.door,
            "worker": self.worker,
            "policy_generation": where.policy_generation,
            "client_address": where.client_address,
            "destination": where.destination,
            "method": method,
            "host": host,
            "path": path.split("?", 1)[0],
            "allowed": decision.allowed,
            "status": decision.status,
            "reason": decision.reason.value,
            "rule": decision.rule,
            "identity": {"kind": identity.kind, "subject": identity.subject, "issuer": identity.issuer},
            "latency_ms": round(latency * 1000, 3),
            "cache": cache,
        }
        if decision.detail:
            record["detail"] = decision.detail
        if decision.dry_run_denials:
            record["dry_run_would_deny"] = list(decision.dry_run_denials)
        self.logger.info(json.dumps(record, separators=(",", ":"), ensure_ascii=True))
        if self.otel is not None:
            from authz.server.log_export import emit

            emit(self.otel, record)
