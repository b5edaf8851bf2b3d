"""Whose each header of an HTTP ext_authz call is: the client's, or Envoy's.

Envoy's HTTP call to authz carries the client request's headers (those its
``allowed_headers`` forward) together with headers Envoy sets on its own
call (its framing, its timeout, its internal mark). The gRPC door's
CheckRequest carries the client's alone, plus the pseudo-headers. So that
both doors present the same ``request.headers``, :data:`CALL_HEADERS` is the
one table of the call's headers that are not simply the client's; the HTTP
door (:mod:`authz.wire.http`) builds ``request.headers`` through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple


class CallHeader(NamedTuple):
    """Whose a header of the call is: the client request's (under the name
    the gRPC door's CheckRequest gives it), or Envoy's own, set on its call
    to authz and never read as the client's."""

    owner: Literal["client", "envoy"]
    shown_as: str | None = None


#: The one table of the call's headers that are not simply the client's
#: (every other header of the call is the client request's, as Envoy
#: forwards it). ``request.headers`` holds the client's only, named as
#: through the gRPC door, plus the pseudo-headers :data:`PSEUDO_HEADERS`.
CALL_HEADERS: Mapping[str, CallHeader] = {
    "host": CallHeader("client", ":authority"),
    # Envoy frames its own call (the client's length is not sent; with_request_body: the buffered body's).
    "content-length": CallHeader("envoy"),
    # Envoy's client marks its own call internal, whoever the client is.
    "x-envoy-internal": CallHeader("envoy"),
    # The call's timeout (read by HttpDoor.call_timeout) and its retries.
    "x-envoy-expected-rq-timeout-ms": CallHeader("envoy"),
    "x-envoy-attempt-count": CallHeader("envoy"),
    # Istio's metadata exchange between the proxy that calls and authz's sidecar.
    "x-envoy-peer-metadata": CallHeader("envoy"),
    "x-envoy-peer-metadata-id": CallHeader("envoy"),
    # The trace context of Envoy's own span for its call, when Envoy traces
    # (it replaces the client's; the door's own trace reads them as the call's).
    **{name: CallHeader("envoy") for name in (
        "traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled",
        "x-b3-flags", "x-ot-span-context", "x-cloud-trace-context", "x-datadog-trace-id",
        "x-datadog-parent-id", "x-datadog-sampling-priority")},
}
#: The pseudo-headers a CheckRequest carries, with the attribute each
#: repeats (as :data:`FIELDS` reads it from the call).
PSEUDO_HEADERS: Mapping[str, str] = {":authority": "host", ":method": "method", ":path": "path", ":scheme": "scheme"}
ENVOYS = frozenset(name for name, header in CALL_HEADERS.items() if header.owner == "envoy")
RENAMED = {name: header.shown_as for name, header in CALL_HEADERS.items() if header.shown_as}


def client_headers(call_headers: Mapping[str, str], attributes: Mapping[str, Any]) -> dict[str, str]:
    """``request.headers`` through this door: the call's headers that are
    the client's (:data:`CALL_HEADERS`), named as the gRPC door names them,
    and the pseudo-headers, from ``attributes`` (those read from the call)."""
    out = {pseudo: value for pseudo, name in PSEUDO_HEADERS.items() if (value := attributes[name])}
    for name, value in call_headers.items():
        if name not in ENVOYS:
            out[RENAMED.get(name, name)] = value
    return out
