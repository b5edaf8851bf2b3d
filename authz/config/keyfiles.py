"""Key files a policy names: an issuer's ``jwks_file`` (a JWKS document) and
the identity token's PEM keys, read with one set of messages.

Each problem is a ValueError that names the file as the policy wrote it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

from authz.config.messages import os_reason
from authz.identity.keys import KeySet, parse_jwks

T = TypeVar("T")


class _NotJson(ValueError):
    """A key file that is not JSON at all."""


def read_key_file(name: str, file: str, parse: Callable[[bytes], T]) -> T:
    """``parse`` (raising ValueError) of the content of ``file``, which the
    policy calls ``name``."""
    try:
        with open(file, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ValueError(f"cannot read key file {name!r}: {os_reason(exc)}") from None
    try:
        return parse(data)
    except _NotJson:
        raise ValueError(f"key file {name!r} is not JSON (a JWKS document: {{\"keys\": [...]}})") from None
    except ValueError as exc:
        raise ValueError(f"key file {name!r}: {exc}") from None


def parse_jwks_file(algorithms: frozenset[str], data: bytes) -> KeySet:
    """The key set of a ``jwks_file`` (which, unlike a remote set, may hold
    shared secrets)."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise _NotJson from None
    return parse_jwks(document, algorithms, allow_symmetric=True)
