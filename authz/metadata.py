"""What Envoy learns back besides the upstream's headers: dynamic metadata.

Envoy keeps the metadata an answer carries under the ext_authz filter's
namespace, where access logs (``%DYNAMIC_METADATA(...)%``) and rate-limit
actions read it. Every answer carries :data:`BUILTIN` keys (the reason
code, the rule, the issuer's name: never a credential or a claim value);
an allow also carries the keys ``response.metadata`` computes.

A value is what JSON can hold (null, bool, number, string, list, map);
strings anywhere in it are sanitized as header values are (printable
ASCII, everything else percent-encoded), so a claim cannot inject a line
into a text access log, and the HTTP door, which carries metadata in
headers, sends the same strings as the gRPC door.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from authz.sanitize import sanitize_header_value

#: Keys authz sets on every answer; a policy cannot compute them.
BUILTIN = ("reason", "rule", "issuer")
#: The longest value (as JSON text) a key may carry.
MAX_VALUE = 8192
#: Integers beyond this lose precision as the double Envoy stores.
MAX_EXACT_INT = 2**53
_MAX_DEPTH = 16


class Unrepresentable(ValueError):
    """A value Envoy's metadata cannot carry (bytes, a timestamp, NaN, ...)."""


def carried(value: Any) -> Any:
    """``value`` as metadata carries it: plain JSON-like data, strings
    sanitized. Raises :class:`Unrepresentable`."""
    converted = _plain(value, 0)
    if len(as_text(converted)) > MAX_VALUE:
        raise Unrepresentable(f"longer than {MAX_VALUE} characters")
    return converted


def as_text(value: Any) -> str:
    """A carried value as one header value: a string as it is, anything
    else as its JSON text (printable ASCII)."""
    if type(value) is str:
        return value
    return json.dumps(value, separators=(",", ":"))


def _plain(value: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise Unrepresentable(f"nested deeper than {_MAX_DEPTH}")
    kind = type(value)
    if kind is str:
        return sanitize_header_value(value)
    if value is None or kind is bool:
        return value
    if kind is int:
        if abs(value) > MAX_EXACT_INT:
            raise Unrepresentable("an integer too large for a double")
        return value
    if kind is float:
        if not math.isfinite(value):
            raise Unrepresentable("not a finite number")
        return value
    if kind is list or kind is tuple:
        return [_plain(item, depth + 1) for item in value]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise Unrepresentable("a map key that is not a string")
            out[sanitize_header_value(key)] = _plain(item, depth + 1)
        return out
    raise Unrepresentable(f"a {kind.__name__} value, which metadata cannot carry")
