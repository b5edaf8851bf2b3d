"""Where each door reads the wire and writes its answer.

A door is Envoy's protocol to authz: gRPC (:mod:`authz.wire.grpc`) or HTTP
(:mod:`authz.wire.http`). Each reads every attribute of
:data:`authz.request.ATTRIBUTES` from its own wire through one table, and the
servicer drives both through the same steps (:class:`Door`).
"""

from __future__ import annotations

import functools
import hashlib
import marshal
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from authz.decision import Decision
    from authz.policy import Reads
    from authz.request import Request


class Door(Protocol):
    """The steps of one Check, as a door provides them. ``message`` is what
    ``parse`` made of the raw input; answers are prepared, ready to send."""

    name: str
    #: What ``parse`` and ``to_request`` raise for input that cannot be read.
    invalid: tuple[type[Exception], ...]
    invalid_request: Any
    internal_error: Any

    def parse(self, raw: Any) -> Any: ...
    def to_request(self, message: Any) -> Request: ...
    def make_cache_key(self, reads: Reads, credential_headers: tuple[str, ...]) -> Callable[[Any], Hashable | None]: ...
    def request_id_of(self, message: Any) -> str | None: ...
    def summary(self, message: Any) -> tuple[str | None, str, str, str]: ...
    def trace_headers(self, message: Any) -> Mapping[str, str]: ...
    def addresses(self, message: Any) -> tuple[str | None, str | None]:
        """(the client's address as authz trusts it, the destination
        ``address:port``) for decision logs; None where the door cannot know."""
    def encode(self, decision: Decision, request_id: str | None) -> Any: ...
    def destination_principal(self, message: Any) -> str:
        """The request's ``destination.principal`` ("" when the door's
        protocol does not carry it), for the policy's ``callers:``."""
    def call_timeout(self, message: Any) -> float | None:
        """Seconds the caller gives this call, when the message says (None:
        unknown, or told by the transport instead)."""


#: How many recent keys' digests are remembered (per process; a few MB).
DIGEST_MEMO = 4096
#: marshal's format 2 writes values only; later ones also mark objects
#: referenced elsewhere, so equal values could give different bytes.
_MARSHAL_VERSION = 2


@functools.lru_cache(maxsize=DIGEST_MEMO)
def _digest(parts: tuple[Any, ...]) -> bytes:
    return hashlib.sha256(marshal.dumps(parts, _MARSHAL_VERSION)).digest()[:20]


def cache_digest(parts: list[Any]) -> bytes:
    """The decision-cache key of a request: a SHA-256 digest, cut to 160
    bits, of the values it was decided on. ``marshal`` (format 2) writes
    each value with its type and length, so different values never give the
    same bytes and equal values always the same, at a tenth of the cost of
    ``repr``. A digest, not the values, is kept: a token alone is ~1 KB,
    and 100,000 entries must fit a worker.

    The digests of the :data:`DIGEST_MEMO` most recent keys are remembered
    (``functools.lru_cache``, keyed by the values themselves): a caller
    that repeats its request costs a hash of its values (SipHash, a quarter
    of SHA-256's time) instead of a new digest. The memo finds equal tuples,
    so each position must hold one type: strings, bytes, ints or None, or
    tuples of them (never lists, nor True beside 1), where equal means the
    same value."""
    return _digest(tuple(parts))


def body_digest(body: bytes) -> bytes:
    """What a decision-cache key holds of a request body a policy reads: its
    SHA-256 (the key's memo keeps its parts, and a body may be a megabyte)."""
    return hashlib.sha256(body).digest()
