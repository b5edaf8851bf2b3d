"""What the upstream learns on allow: headers computed by CEL, headers
removed, and the identity token.

Header values are sanitized: CR, LF, NUL, other controls and non-ASCII are
percent-encoded, never passed raw. Every header authz sets is also stripped
from the client's request when authz has no value for it, so a client-sent
copy never reaches the upstream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from authz.cel import EvaluationError, Expression
from authz.identity.token import IdentityTokenSigner
from authz.request import View

MAX_HEADER_VALUE = 8192
MAX_ADDED_BYTES = 60 * 1024
MAX_ADDED_HEADERS = 100

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



@dataclass(frozen=True, eq=False)
class ResponsePlan:
    headers: tuple[tuple[str, Expression], ...] = ()
    remove: tuple[str, ...] = ()
    identity_token: IdentityTokenSigner | None = None
    #: The underscore spelling of every header it sets or removes
    #: (``x_user_id`` for ``x-user-id``), always removed: WSGI, CGI and Rack
    #: upstreams read both spellings as one name, so a client-sent twin must
    #: never reach them beside authz's value.
    twins: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        names = [name for name, _ in self.headers] + list(self.remove)
        if self.identity_token is not None:
            names.append(self.identity_token.header)
        object.__setattr__(self, "twins", tuple(dict.fromkeys(n.replace("-", "_") for n in names if "-" in n)))

    def jwks(self) -> dict[str, Any]:
        return {"keys": list(self.identity_token.jwks) if self.identity_token else []}

    def build(self, view: View) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...], list[str], float | None]:
        """(headers to set, headers to remove, notes, fresh until) for an
        allowed request; "fresh until" bounds how long the answer may be
        reused (the identity token's reuse window), None when unbounded."""
        set_headers: list[tuple[str, str]] = []
        remove = [*self.remove, *self.twins]
        notes: list[str] = []
        total = 0
        for name, expression in self.headers:
            try:
                value = expression.evaluate(view.variables(expression.roots))
            except EvaluationError as exc:
                notes.append(f"header {name}: {exc}")
                remove.append(name)
                continue
            if not isinstance(value, str) or not value:
                notes.append(f"header {name}: no string value")
                remove.append(name)
                continue
            value = sanitize_header_value(value)
            total += len(name) + len(value)
            if len(value) > MAX_HEADER_VALUE or total > MAX_ADDED_BYTES or len(set_headers) >= MAX_ADDED_HEADERS:
                notes.append(f"header {name}: over Envoy's header limits, dropped")
                remove.append(name)
                continue
            set_headers.append((name, value))
        signer = self.identity_token
        fresh_until = None
        if signer is not None:
            if view.identity.authenticated:
                token, fresh_until = signer.token(view.identity, view.request.source_principal, view.now)
                set_headers.append((signer.header, token))
            else:
                remove.append(signer.header)
        return tuple(set_headers), tuple(dict.fromkeys(remove)), notes, fresh_until
