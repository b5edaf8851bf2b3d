"""What the Envoy configs ``authz envoy-config`` writes do with what authz
tells Envoy back: log it, limit by it, and (HTTP door) sort its headers.

authz answers every Check with dynamic metadata (``reason``, ``rule``,
``issuer``, and on allow the policy's ``response.metadata`` keys), which
Envoy keeps under the ext_authz filter's namespace, :data:`NAMESPACE`:

- a JSON access log (``--access-log PATH``) logs those keys, under
  ``authz``, beside the request line without its query (a token sent in a
  query string never reaches the log) and the response code;
- rate-limit actions (``--rate-limit-by KEY[,KEY...]``) on the route turn
  metadata keys into rate-limit descriptors, for Envoy's ``local_ratelimit``
  filter (``--local-rate-limit``, placed after ext_authz, so it sees the
  metadata) or a shared rate-limit service;
- through the HTTP door, metadata arrives as one header per key, which
  Envoy turns into metadata only when ``dynamic_metadata_from_headers``
  names it, and the headers for the client (``--client-header``) reach the
  client on allow only when ``allowed_client_headers_on_success`` names them.
  A header named in neither list never reaches the client or the upstream.

Everything is built from envoy-data-plane's typed classes, as the rest of
the bootstrap is (:mod:`authz.tools.envoy_config`).
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from envoy_data_plane.envoy.config.accesslog.v3 import AccessLog
from envoy_data_plane.envoy.config.core.v3 import RuntimeFractionalPercent, SubstitutionFormatString
from envoy_data_plane.envoy.config.route.v3 import (
    RateLimit,
    RateLimitAction,
    RateLimitActionMetaData,
    RateLimitActionMetaDataSource,
)
from envoy_data_plane.envoy.extensions.access_loggers.file.v3 import FileAccessLog
from envoy_data_plane.envoy.extensions.common.ratelimit.v3 import (
    LocalRateLimitDescriptor,
    RateLimitDescriptorEntry,
)
from envoy_data_plane.envoy.extensions.filters.http.local_ratelimit.v3 import LocalRateLimit
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import HttpFilter
from envoy_data_plane.envoy.type.matcher.v3 import ListStringMatcher, StringMatcher
from envoy_data_plane.envoy.type.metadata.v3 import MetadataKey, MetadataKeyPathSegment
from envoy_data_plane.envoy.type.v3 import (
    FractionalPercent,
    FractionalPercentDenominatorType,
    TokenBucket,
)
from envoy_data_plane.google.protobuf import Any as AnyMessage
from envoy_data_plane.google.protobuf import Struct

from authz.config.schema import parse_duration
from authz.metadata import BUILTIN

#: Where Envoy keeps what ext_authz's answer carries: the filter's name.
NAMESPACE = "envoy.filters.http.ext_authz"
LOCAL_RATELIMIT = "envoy.filters.http.local_ratelimit"
_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LIMIT = re.compile(r"(?P<entries>[^:]+):(?P<requests>\d+)/(?P<period>\S+)")
#: A bucket no caller empties: what "unlimited" is to local_ratelimit.
_UNLIMITED = 1_000_000_000


@dataclass(frozen=True)
class LocalLimit:
    """One ``local_ratelimit`` descriptor: entries (key, value; value "" for
    a bucket per value) and ``requests`` per ``period`` seconds."""

    entries: tuple[tuple[str, str], ...]
    requests: int
    period: float

    @classmethod
    def parse(cls, text: str) -> LocalLimit:
        """``tier=free:3/1m`` (3 requests a minute for tier "free"), or
        ``tier=free,sub=*:3/1m`` (3 a minute for each free caller)."""
        match = _LIMIT.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"--local-rate-limit {text!r}: expected KEY=VALUE[,KEY=VALUE...]:REQUESTS/PERIOD, e.g. "
                             "tier=free:3/1m")
        entries = []
        for item in match["entries"].split(","):
            key, equals, value = item.strip().partition("=")
            if not equals or not _KEY.fullmatch(key) or not value:
                raise ValueError(f"--local-rate-limit {text!r}: {item!r} is not KEY=VALUE (VALUE * for a bucket per "
                                 "value)")
            entries.append((key, "" if value == "*" else value))
        period = parse_duration(match["period"])
        requests = int(match["requests"])
        if requests < 1 or period < 1 or period != math.floor(period):
            raise ValueError(f"--local-rate-limit {text!r}: at least 1 request per a whole number of seconds")
        return cls(tuple(entries), requests, period)


class MetadataOptions(Protocol):
    """What this module reads of :class:`authz.tools.envoy_config.EnvoyOptions`
    (a protocol, so the two modules do not import each other)."""

    @property
    def access_log(self) -> str | None: ...
    @property
    def metadata_keys(self) -> Sequence[str]: ...
    @property
    def client_headers(self) -> Sequence[str]: ...
    @property
    def rate_limit_by(self) -> Sequence[Sequence[str]]: ...
    @property
    def local_rate_limits(self) -> Sequence[LocalLimit]: ...


def metadata_keys(options: MetadataOptions) -> list[str]:
    """Every metadata key the config uses: authz's own, the ones named to
    log, and the ones limited by."""
    keys = [*BUILTIN, *options.metadata_keys, *(k for keys in options.rate_limit_by for k in keys)]
    for key in keys:
        if not _KEY.fullmatch(key):
            raise ValueError(f"invalid metadata key {key!r} (lower-case letters, digits, '-' and '_', starting with a "
                             "letter)")
    return list(dict.fromkeys(keys))


def _exact(names: Sequence[str]) -> ListStringMatcher:
    return ListStringMatcher(patterns=[StringMatcher(exact=name) for name in names])


def authorization_response(options: MetadataOptions) -> dict[str, Any]:
    """HTTP door: the fields of ``authorization_response`` that take
    metadata and the client's headers from authz's answer."""
    extra: dict[str, Any] = {"dynamic_metadata_from_headers": _exact(metadata_keys(options))}
    if options.client_headers:
        extra["allowed_client_headers_on_success"] = _exact(options.client_headers)
    return extra


def access_logs(options: MetadataOptions) -> list[AccessLog]:
    """A JSON line per request in ``options.access_log``: the request (path
    without its query), the response, and authz's metadata under ``authz``."""
    if not options.access_log:
        return []
    authz = {key: f"%DYNAMIC_METADATA({NAMESPACE}:{key})%" for key in metadata_keys(options)}
    fields: dict[str, Any] = {
        "start_time": "%START_TIME%",
        "method": "%REQ(:METHOD)%",
        "path": "%PATH(NQ)%",
        "authority": "%REQ(:AUTHORITY)%",
        "status": "%RESPONSE_CODE%",
        "response_flags": "%RESPONSE_FLAGS%",
        "duration_ms": "%DURATION%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "authz": authz,
    }
    log = FileAccessLog(path=options.access_log,
                        log_format=SubstitutionFormatString(json_format=Struct.from_dict(fields)))
    return [AccessLog(name="envoy.access_loggers.file", typed_config=AnyMessage.pack(log))]


def rate_limits(options: MetadataOptions) -> list[RateLimit]:
    """The route's rate-limit actions: one descriptor per ``--rate-limit-by``,
    an entry per key, read from authz's metadata. A request whose answer
    lacks a key gets no descriptor from that action (so no limit of it)."""
    metadata_keys(options)  # each key checked
    return [
        RateLimit(actions=[
            RateLimitAction(metadata=RateLimitActionMetaData(
                descriptor_key=key,
                metadata_key=MetadataKey(key=NAMESPACE, path=[MetadataKeyPathSegment(key=key)]),
                source=RateLimitActionMetaDataSource.DYNAMIC,
            ))
            for key in keys
        ])
        for keys in options.rate_limit_by
    ]


def _all_requests() -> RuntimeFractionalPercent:
    return RuntimeFractionalPercent(default_value=FractionalPercent(
        numerator=100, denominator=FractionalPercentDenominatorType.HUNDRED))


def _bucket(requests: int, seconds: float) -> TokenBucket:
    return TokenBucket(max_tokens=requests, tokens_per_fill=requests, fill_interval=datetime.timedelta(seconds=seconds))


def filters_after_authz(options: MetadataOptions) -> list[HttpFilter]:
    """``local_ratelimit``, after ext_authz (it reads the descriptors the
    route's actions make of authz's metadata): each ``--local-rate-limit``
    a bucket, every other request unlimited. 429 when a bucket is empty."""
    if not options.local_rate_limits:
        return []
    limited = {key for keys in options.rate_limit_by for key in keys}
    descriptors = []
    for limit in options.local_rate_limits:
        unknown = [key for key, _ in limit.entries if key not in limited]
        if unknown:
            raise ValueError(f"--local-rate-limit names {', '.join(unknown)}, which no --rate-limit-by makes a "
                             "descriptor of")
        descriptors.append(LocalRateLimitDescriptor(
            entries=[RateLimitDescriptorEntry(key=key, value=value) for key, value in limit.entries],
            token_bucket=_bucket(limit.requests, limit.period)))
    config = LocalRateLimit(
        stat_prefix="authz_rate_limit",
        # The route carries the same actions for a shared rate-limit
        # service; this filter reads its own copy (Envoy's preferred form).
        rate_limits=rate_limits(options),
        token_bucket=_bucket(_UNLIMITED, 1.0),
        filter_enabled=_all_requests(),
        filter_enforced=_all_requests(),
        descriptors=descriptors,
        always_consume_default_token_bucket=False,
    )
    return [HttpFilter(name=LOCAL_RATELIMIT, typed_config=AnyMessage.pack(config))]


def flags(options: MetadataOptions) -> str:
    """The command-line flags that asked for these parts (for the header
    comment of a generated config)."""
    out = []
    if options.access_log:
        out.append(f"--access-log {options.access_log}")
    out += [f"--metadata-key {key}" for key in options.metadata_keys]
    out += [f"--client-header {name}" for name in options.client_headers]
    out += [f"--rate-limit-by {','.join(keys)}" for keys in options.rate_limit_by]
    for limit in options.local_rate_limits:
        entries = ",".join(f"{key}={value or '*'}" for key, value in limit.entries)
        out.append(f"--local-rate-limit {entries}:{limit.requests}/{limit.period:g}s")
    return "".join(f" {flag}" for flag in out)
