"""How much memory a cache's entries hold, estimated without walking them all.

``/metrics`` asks every worker for its caches' sizes on each scrape, and a
decision cache may hold 100,000 entries: measuring each would hold the
worker's lock (and the GIL) for tens of milliseconds per scrape. Instead a
sample of entries (the first the cache holds, oldest first) is measured whole (the objects each
one reaches, counted once) and the mean is multiplied by the number of
entries, plus what the cache's own index costs per entry.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

#: Entries measured per estimate.
SAMPLE = 32
#: What an LRU index adds per entry beyond the key and value themselves:
#: a slot in the data dict, one in the size dict, a node of the order list,
#: and the (expiry, value) pair (measured with cachetools 5 on CPython 3.11).
INDEX_BYTES_PER_ENTRY = 3 * 8 * 3 + 72 + sys.getsizeof((0.0, None))

_SHARED = (type(None), bool, type)


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of ``obj`` and every object it reaches through containers,
    ``__dict__`` and ``__slots__``, each counted once; classes, functions and
    modules (shared by every entry) are not counted."""
    seen = set() if seen is None else seen
    stack = [obj]
    total = 0
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, _SHARED) or callable(item):
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, str | bytes | bytearray | int | float):
            continue
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        else:
            stack.extend(_fields(item))
    return total


def _fields(item: Any) -> Iterable[Any]:
    values: list[Any] = []
    namespace = getattr(item, "__dict__", None)
    if isinstance(namespace, dict):
        values.append(namespace)
    for klass in type(item).__mro__:
        for name in getattr(klass, "__slots__", ()):
            if name not in ("__dict__", "__weakref__") and hasattr(item, name):
                values.append(getattr(item, name))
    return values


def estimate(entries: int, sample: list[tuple[Any, Any]]) -> int:
    """Bytes of ``entries`` entries whose mean is the ``sample``'s
    ((key, value) pairs), with the index's cost per entry."""
    if entries == 0 or not sample:
        return 0
    measured = sum(deep_size(key) + deep_size(value) for key, value in sample)
    return round(entries * (measured / len(sample) + INDEX_BYTES_PER_ENTRY))


# -- Sizes as an entry is stored (the byte bounds) ------------------------------
#
# An entry bounded by bytes is sized once, when it is stored, on a miss: the
# walk above costs tens of µs, so these read lengths instead. Each is within
# a few per cent of ``deep_size`` for a typical entry and never far below it
# for a large one (long tokens, many claims: what a caller controls).

_STR = sys.getsizeof("")
_BYTES = sys.getsizeof(b"")
_PAIR = sys.getsizeof((b"", b""))
#: A decision-cache entry besides its answer's bytes and strings: the key
#: (a digest with its door's name), the slim decision and identity records,
#: the metric labels, the expiry, and the index (measured with deep_size on
#: the acceptance policy's allow).
DECISION_ENTRY_BYTES = 1_250
#: A token-cache entry besides its claims, roles and scopes: the digest key,
#: the identity record, the expiry and the index.
TOKEN_ENTRY_BYTES = 560
_CONTAINER_SLOT = 8 * 3  # a list/tuple slot, with room as containers grow
_DICT_SLOT = 2 * _CONTAINER_SLOT
_DICT = 64
_LIST = 56
_NUMBER = 32


def json_bytes(value: Any) -> int:
    """Bytes of a JSON value as ``json.loads`` builds it (dict, list, str,
    int, float, bool, None), each object counted as if unshared. The flat
    top level of a claims object is read in one loop (the usual case, ~1 µs)."""
    if not isinstance(value, Mapping):
        return _json_walk(value)
    total = _DICT + _DICT_SLOT * len(value)
    for key, item in value.items():
        total += _STR + len(key) if type(key) is str else _json_walk(key)
        kind = type(item)
        if kind is str:
            total += _STR + len(item)
        elif kind is int or kind is float:
            total += _NUMBER
        elif kind is not bool and item is not None:
            total += _json_walk(item)
    return total


def _json_walk(value: Any) -> int:
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            total += _STR + len(item)
        elif kind is int or kind is float:
            total += _NUMBER
        elif kind is bool or item is None:
            continue
        elif isinstance(item, Mapping):
            total += _DICT + _DICT_SLOT * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            total += _LIST + _CONTAINER_SLOT * len(item)
            stack.extend(item)
        else:
            total += sys.getsizeof(item)
    return total


def token_entry_bytes(entry: tuple[float, Any]) -> int:
    """A verified-token entry: (expiry, Identity)."""
    identity = entry[1]
    roles, scopes = identity.roles, identity.scopes
    return (TOKEN_ENTRY_BYTES + json_bytes(identity.claims) + (_STR + _CONTAINER_SLOT) * (len(roles) + len(scopes))
            + sum(map(len, roles)) + sum(map(len, scopes)))


def answer_bytes(response: Any) -> int:
    """A prepared answer: the gRPC door's serialized CheckResponse, or the
    HTTP door's (status, [(name, value)], body)."""
    if response is None:
        return 0
    if type(response) is bytes:
        return _BYTES + len(response)
    _status, headers, body = response
    return (72 + 56 + _BYTES + len(body)
            + sum(_PAIR + 2 * _BYTES + _CONTAINER_SLOT + len(k) + len(v) for k, v in headers))


def decision_entry_bytes(entry: tuple[float, Any]) -> int:
    """A decision-cache entry: (expiry, Cached)."""
    cached = entry[1]
    decision = cached.decision
    identity = decision.identity
    total = DECISION_ENTRY_BYTES + answer_bytes(cached.response)
    for text in (identity.subject, identity.issuer, decision.rule):
        if text is not None:
            total += len(text)
    denials = decision.dry_run_denials
    return total + (_STR + _CONTAINER_SLOT) * len(denials) + sum(map(len, denials)) if denials else total
