"""The flow's cookies: read from a Cookie header, written as Set-Cookie,
and stripped from the Cookie header the upstream gets.

Every cookie of the flow is ``__Host-`` prefixed: the browser keeps it only
when it was set over HTTPS with ``Secure``, ``Path=/`` and no ``Domain``, so
no sibling host and no plain-HTTP page can plant or read one. Each is also
``HttpOnly`` (no script reads it) and ``SameSite=Lax`` (a cross-site POST
does not carry it).
"""

from __future__ import annotations

from authz.request import CookieError, cookie_value

__all__ = ["MAX_COOKIE", "PREFIX", "CookieError", "clear_cookie", "has_any", "holds", "read", "set_cookie", "strip"]

PREFIX = "__Host-"
#: The longest cookie value written (browsers keep 4096 bytes per cookie,
#: name and attributes included).
MAX_COOKIE = 3800
_ATTRIBUTES = "Path=/; Secure; HttpOnly; SameSite=Lax"


#: A cookie read from the request: its value, None, or CookieError (set
#: twice with different values, or empty).
read = cookie_value


def has_any(header: str | None, names: tuple[str, ...]) -> bool:
    return bool(header) and any(name in header for name in names)  # type: ignore[operator]


def holds(header: str | None, name: str) -> bool:
    """Whether the Cookie ``header`` holds cookie ``name`` (any value)."""
    if not header or name not in header:
        return False
    return any(part.strip().partition("=")[0] == name for part in header.split(";"))


def strip(header: str, names: tuple[str, ...]) -> str:
    """``header`` without the cookies ``names`` (the rest as sent)."""
    kept = [part.strip() for part in header.split(";")
            if part.strip() and part.strip().partition("=")[0] not in names]
    return "; ".join(kept)


def set_cookie(name: str, value: str, max_age: int) -> str:
    return f"{name}={value}; {_ATTRIBUTES}; Max-Age={max(int(max_age), 0)}"


def clear_cookie(name: str) -> str:
    return f"{name}=; {_ATTRIBUTES}; Max-Age=0"
