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
from collections.abc import Iterable
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
