"""Values authz writes into headers, and into what Envoy logs: printable
ASCII only, so a claim can neither inject a header line nor smuggle bytes
Envoy would mangle or a log reader would misread."""

from __future__ import annotations

import re

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
