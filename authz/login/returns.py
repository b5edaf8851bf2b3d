"""Where a browser may be sent back to after sign-in: a path of this origin.

The return URL is the path and query the browser asked for when sign-in
started, kept in the sealed login-state cookie, and checked again on the
way out. Anything a browser could read as another origin is refused: an
absolute URL (``https://evil``), a scheme-relative one (``//evil``), a
backslash (browsers read ``/\\evil`` as ``//evil``), whitespace or controls
(browsers drop tabs and newlines from URLs), and the same forms percent-encoded
(``/%2F%2Fevil``, ``/%5Cevil``), however many times."""

from __future__ import annotations

from urllib.parse import unquote

_MAX = 2048


def safe_return(target: str) -> bool:
    """True when ``target`` is a path of this origin (with its query) and nothing else."""
    if not target or len(target) > _MAX or not _plain(target):
        return False
    seen = target.partition("?")[0]
    for _ in range(4):  # the path decoded until it no longer changes, a few times at most
        decoded = unquote(seen)
        if decoded == seen:
            return True
        if decoded.startswith("//") or "\\" in decoded or any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
            return False
        seen = decoded
    return False


def _plain(text: str) -> bool:
    """A path that starts with one '/', without a backslash, whitespace or control."""
    if not text.startswith("/") or text.startswith("//") or "\\" in text:
        return False
    return all(0x20 < ord(c) < 0x7F for c in text)
