"""The decision-cache key digest and its memo of recent keys."""

from __future__ import annotations

import hashlib
import marshal

from authz.wire import DIGEST_MEMO, _digest, cache_digest


def test_the_memo_gives_the_digest_of_exactly_the_values_it_is_asked_for() -> None:
    token = b"Bearer " + b"a" * 900
    first = ["http", b"/authz/a", None, None, token, b"t1"]
    assert cache_digest(first) == hashlib.sha256(marshal.dumps(tuple(first), 2)).digest()[:20]
    # Asked again with equal values in new objects: the remembered digest, the same.
    assert cache_digest(["http", b"/authz/a", None, None, bytes(bytearray(token)), b"t1"]) == cache_digest(first)
    # One byte of the token, a value's type, or a missing value apart: another digest.
    others = [["http", b"/authz/a", None, None, token[:-1] + b"b", b"t1"],
              ["http", "/authz/a", None, None, token, b"t1"],
              ["http", b"/authz/a", None, None, token, None],
              ["grpc", b"/authz/a", None, None, token, b"t1"]]
    digests = {cache_digest(parts) for parts in others}
    assert len(digests) == len(others) and cache_digest(first) not in digests


def test_the_memo_is_bounded() -> None:
    for index in range(DIGEST_MEMO + 100):
        cache_digest(["http", str(index)])
    info = _digest.cache_info()
    assert info.maxsize == DIGEST_MEMO and info.currsize <= DIGEST_MEMO
