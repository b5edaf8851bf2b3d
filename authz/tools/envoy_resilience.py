"""What the generated Envoy configs do so that one lost authz process costs
(almost) nothing: the authz cluster's health checks, outlier detection and
circuit breakers, and the retry policy of the ext_authz call.

Why each is there, and what it was measured to save, is in
docs/operations.md ("When an authz process is lost") and
benchmarks/RESULTS.md (``benchmarks/fault_bench.py``). In short, when a
worker is SIGKILLed:

- the checks in flight on its connections are reset, and every new check
  Envoy sends to its port fails to connect until it is back: the ext_authz
  call is **retried** on another endpoint (``previous_hosts``) for those
  connection-level failures only. An answer from authz, a denial or an
  error such as RESOURCE_EXHAUSTED (overload), is never retried, so a retry
  can neither turn a denial into an allow nor multiply the load of a
  saturated authz;
- **outlier detection** ejects an endpoint after a few consecutive
  connection failures (local-origin errors, counted apart from authz's
  answers), so checks stop being sent there at all;
- an active **gRPC health check** against authz's ``grpc.health.v1``
  service brings the endpoint back as soon as the restarted worker is
  SERVING (and takes a draining worker, NOT_SERVING, out of rotation);
- the **circuit breakers** let as many retries be in flight as requests:
  Envoy's default (3 retries at once per cluster) fails most of the checks
  that were in flight on the lost connections.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from envoy_data_plane.envoy.config.cluster.v3 import (
    CircuitBreakers,
    CircuitBreakersThresholds,
    OutlierDetection,
)
from envoy_data_plane.envoy.config.core.v3 import (
    BackoffStrategy,
    HealthCheck,
    HealthCheckGrpcHealthCheck,
    RetryPolicy,
    RetryPolicyRetryHostPredicate,
)
from envoy_data_plane.envoy.extensions.retry.host.previous_hosts.v3 import PreviousHostsPredicate
from envoy_data_plane.google.protobuf import Any as AnyMessage

#: Every measure, in the order the benchmark switches them on.
RETRY = "retry"
CIRCUIT_BREAKERS = "circuit-breakers"
OUTLIER_DETECTION = "outlier-detection"
HEALTH_CHECK = "health-check"
MEASURES = (RETRY, CIRCUIT_BREAKERS, OUTLIER_DETECTION, HEALTH_CHECK)

#: Which failures a check is retried on: the connection-level ones, where
#: authz never answered. gRPC's UNAVAILABLE is what a stream gets when its
#: connection goes away under it (a worker killed or stopping).
GRPC_RETRY_ON = "connect-failure,refused-stream,reset,unavailable"
HTTP_RETRY_ON = "connect-failure,refused-stream,reset"
RETRIES = 2
#: Seconds: the first retry waits up to this long (Envoy jitters it).
BACKOFF_BASE = 0.005
#: The service authz reports SERVING for once its policy is loaded.
HEALTH_SERVICE = "envoy.service.auth.v3.Authorization"
#: As many retries in flight as requests (Envoy's default for both is 1024
#: requests and 3 retries).
MAX_REQUESTS = 1024


def _ms(milliseconds: float) -> datetime.timedelta:
    return datetime.timedelta(milliseconds=milliseconds)


def retry_policy(protocol: str, measures: Sequence[str], call_timeout: float) -> RetryPolicy | None:
    """The ext_authz call's retry policy (``grpc_service.retry_policy`` or
    ``http_service.retry_policy``), or None without the ``retry`` measure.

    Envoy turns this core RetryPolicy into a route retry policy whose
    per-try timeout is ``retry_back_off.max_interval`` (Envoy's
    ``convertCoreToRouteRetryPolicy``). So ``max_interval`` is the call's
    whole timeout: a shorter one would cut every check slower than it (one
    waiting for a key set, a busy worker) and deny it after the retries.
    The wait before a retry stays short (jittered from ``base_interval``)."""
    if RETRY not in measures:
        return None
    base = min(BACKOFF_BASE, call_timeout)
    return RetryPolicy(
        retry_on=GRPC_RETRY_ON if protocol == "grpc" else HTTP_RETRY_ON,
        num_retries=RETRIES,
        retry_back_off=BackoffStrategy(base_interval=datetime.timedelta(seconds=base),
                                       max_interval=datetime.timedelta(seconds=call_timeout)),
        # Another endpoint than the one that failed, while there is one.
        retry_host_predicate=[RetryPolicyRetryHostPredicate(
            name="envoy.retry_host_predicates.previous_hosts",
            typed_config=AnyMessage.pack(PreviousHostsPredicate()),
        )],
        host_selection_retry_max_attempts=5,
    )


def connect_timeout(call_timeout: float) -> datetime.timedelta:
    """A quarter of the ext_authz call's timeout: a connect to a host that
    is gone (no answer at all) must leave time for the retry elsewhere."""
    return datetime.timedelta(seconds=call_timeout / 4)


def circuit_breakers(measures: Sequence[str]) -> CircuitBreakers | None:
    if CIRCUIT_BREAKERS not in measures:
        return None
    return CircuitBreakers(thresholds=[CircuitBreakersThresholds(max_requests=MAX_REQUESTS, max_retries=MAX_REQUESTS)])


def outlier_detection(measures: Sequence[str]) -> OutlierDetection | None:
    if OUTLIER_DETECTION not in measures:
        return None
    return OutlierDetection(
        # Connection failures and resets (authz never answered) are counted
        # apart from authz's answers, and 3 in a row eject the endpoint.
        split_external_local_origin_errors=True,
        consecutive_local_origin_failure=3,
        enforcing_consecutive_local_origin_failure=100,
        # authz's answers are not local-origin errors, and eject nobody: a
        # denial is an OK call, overload is RESOURCE_EXHAUSTED (gRPC) or a
        # 503 (the HTTP door), and ejecting a saturated endpoint would only
        # pile its load onto the others.
        enforcing_consecutive_5xx=0,
        # A restarted worker is back within seconds; the health check
        # un-ejects it as soon as it is SERVING, this is the fallback.
        interval=_ms(1000),
        base_ejection_time=_ms(5000),
        max_ejection_time=_ms(30000),
        max_ejection_percent=50,
        always_eject_one_host=True,
    )


#: Proto3 JSON names the typed classes spell otherwise (a letter after a digit
#: capitalised), which Envoy would reject as unknown fields.
JSON_NAMES = {"consecutive5Xx": "consecutive5xx", "enforcingConsecutive5Xx": "enforcingConsecutive5xx"}


def fix_json_names(node: Any) -> None:
    """Rename :data:`JSON_NAMES` keys in a rendered config, in place."""
    if isinstance(node, dict):
        for wrong, right in JSON_NAMES.items():
            if wrong in node:
                node[right] = node.pop(wrong)
        for value in node.values():
            fix_json_names(value)
    elif isinstance(node, list):
        for value in node:
            fix_json_names(value)


def health_checks(protocol: str, measures: Sequence[str]) -> list[HealthCheck]:
    """An active gRPC health check of each endpoint, for the gRPC door. The
    HTTP door has none: its port is shared by every worker of a process (a
    health check cannot tell one worker from another there), and its
    readiness (``/readyz``) is on another port, for Kubernetes."""
    if HEALTH_CHECK not in measures or protocol != "grpc":
        return []
    return [HealthCheck(
        timeout=_ms(500),
        interval=_ms(1000),
        # While a host is unhealthy, look again sooner: it is back as soon
        # as its worker is SERVING.
        unhealthy_interval=_ms(250),
        interval_jitter=_ms(100),
        unhealthy_threshold=2,
        healthy_threshold=1,
        no_traffic_interval=_ms(5000),
        grpc_health_check=HealthCheckGrpcHealthCheck(service_name=HEALTH_SERVICE),
    )]
