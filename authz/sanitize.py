"""Values authz writes into headers, and into what Envoy logs: printable
ASCII only, so a claim can neither inject a header line nor smuggle bytes
Envoy would mangle or a log reader would misread."""

from __future__ import annotations

import re
from typing import Any

_SAFE_VALUE = re.compile(r"[\x20-\x24\x26-\x7e]*")  # printable ASCII except '%'


def sanitize_header_value(value: str) -> str:
    """Printable ASCII passes unchanged; anything else (and '%', so the
    result decodes unambiguously) is percent-encoded as UTF-8."""
    if _SAFE_VALUE.fullmatch(value):
        return value
    out = []
    for char in value:
        if "\x20" <= char <= "\x7e" and char != "%":
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


#: The separators a value read from the request or a claim may not bring
#: into a header authz writes: ',' (list items: ``x-user-roles``, any header
#: a recipient folds) and ';' (cookie attributes, parameters). While a
#: header's expression runs, those it reads stand as private-use characters,
#: so the policy's own separators (its literals, a ``join(",")``) stay as
#: written and the ones data brings come out percent-encoded.
_MARKS = str.maketrans({";": "\ue03b", ",": "\ue02c"})
_MARKED = (("%EE%80%BB", "%3B"), ("%EE%80%AC", "%2C"))


def mark_separators(value: Any) -> Any:
    """``value`` (what an expression reads: strings, maps, lists) with the
    separators in every string and map key marked."""
    if type(value) is str:
        return value.translate(_MARKS)
    if isinstance(value, dict):
        return {mark_separators(k): mark_separators(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mark_separators(item) for item in value]
    return value


def sanitize_marked_value(value: str) -> str:
    """:func:`sanitize_header_value` of a value made from marked reads: the
    separators that came from data are percent-encoded (``%3B``, ``%2C``),
    the others kept."""
    value = sanitize_header_value(value)
    if "%EE%80%" in value:
        for marked, encoded in _MARKED:
            value = value.replace(marked, encoded)
    return value
