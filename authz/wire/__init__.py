"""Where each door reads the wire and writes its answer.

A door is Envoy's protocol to authz: gRPC (:mod:`authz.wire.grpc`) or HTTP
(:mod:`authz.wire.http`). Each reads every attribute of
:data:`authz.request.ATTRIBUTES` from its own wire through one table, and the
servicer drives both through the same steps (:class:`Door`).
"""

from __future__ import annotations

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
    def answer(self, decision: Decision, request_id: str | None) -> Any: ...
