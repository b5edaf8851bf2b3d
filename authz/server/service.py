"""The Check servicer: convert, decide, convert back; with the decision cache.

Request bytes come in unparsed (the servicer parses them itself, so a message
that does not parse is a clean deny, not a gRPC INTERNAL error). A cache hit
costs a parse, a key, a lookup and returns bytes prepared when the decision
was made: no JSON, no signature, no CEL, no new CheckResponse.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from authz.cache import ExpiringLRU, TokenCache
from authz.decision import Decision
from authz.engine import Clock, Engine
from authz.envoy import CheckRequest, make_cache_key, request_id_of, to_request, to_response
from authz.errors import Reason
from authz.identity.jwt import JwtSource, KeysPending
from authz.policy import Policy
from authz.request import Request
from authz.telemetry import Telemetry

log = logging.getLogger("authz.check")

#: Longest a Check waits for a key set when the call carries no deadline.
DEFAULT_WAIT = 5.0
#: Time kept back from the caller's deadline to answer before it expires.
DEADLINE_MARGIN = 0.005


@dataclass(frozen=True, slots=True)
class Cached:
    decision: Decision
    response: bytes | None  # prepared response bytes (allow); None: built per request


class PolicyState:
    """One policy as a worker runs it: engine, caches, cache-key function."""

    def __init__(self, policy: Policy, clock: Clock) -> None:
        self.policy = policy
        self.clock = clock
        self.engine = Engine(policy, clock=clock)
        self.tokens = TokenCache(policy.token_cache_size, time=clock.time, monotonic=clock.monotonic)
        for source in policy.credential_sources:
            if isinstance(source, JwtSource):
                source.cache = self.tokens
        self.decisions: ExpiringLRU[Cached] = ExpiringLRU(policy.decision_cache_size, clock.monotonic)
        self.key_of: Callable[[Any], Hashable | None] = (
            make_cache_key(policy.reads, policy.credential_headers)
            if policy.decision_cache_size > 0 else (lambda _msg: None)
        )

    def invalidate(self) -> None:
        """Keys changed: forget verified tokens and cached decisions."""
        self.tokens.invalidate()
        self.decisions.invalidate()

    def cache_sources(self) -> dict[str, Any]:
        return {
            "decisions": (self.decisions.stats, len(self.decisions)),
            "tokens": (self.tokens.stats, len(self.tokens)),
        }


def _issuer_label(decision: Decision) -> str:
    return decision.identity.source or "none"


class CheckService:
    """Answers Check calls for the policy in force (swapped on reload)."""

    def __init__(self, state: PolicyState, telemetry: Telemetry) -> None:
        self.state = state
        self.telemetry = telemetry
        self._internal_error = to_response(Decision(allowed=False, reason=Reason.INTERNAL_ERROR), None).SerializeToString()

    # -- the shared steps ---------------------------------------------------

    def _cached(self, state: PolicyState, message: Any) -> tuple[bytes | None, Hashable | None]:
        key = state.key_of(message)
        if key is None:
            return None, None
        hit = state.decisions.get(key)
        if hit is None:
            return None, key
        decision = hit.decision
        self._count(decision, cached=True)
        if hit.response is not None:
            return hit.response, key
        return to_response(decision, _request_id(message)).SerializeToString(), key

    def _finish(self, state: PolicyState, key: Hashable | None, decision: Decision, request: Request) -> bytes:
        self._count(decision, cached=False)
        response = to_response(decision, request_id_of(request)).SerializeToString()
        if key is not None and decision.cacheable:
            policy = state.policy
            ttl = policy.decision_ttl if decision.allowed else policy.deny_ttl
            if decision.valid_until is not None:
                ttl = min(ttl, decision.valid_until - state.clock.time())
            state.decisions.put(key, Cached(decision, response if decision.allowed else None), ttl)
        return response

    def _count(self, decision: Decision, *, cached: bool) -> None:
        telemetry = self.telemetry
        telemetry.decisions[(decision.reason.value, _issuer_label(decision))] += 1
        for rule in decision.dry_run_denials:
            telemetry.dry_run_denials[rule] += 1

    def _failed(self, exc: BaseException | None, detail: str) -> bytes:
        if exc is not None:
            log.error("check failed, denying: %s", detail, exc_info=exc)
        self.telemetry.decisions[(Reason.INTERNAL_ERROR.value, "none")] += 1
        return self._internal_error

    # -- grpc.aio -------------------------------------------------------------

    async def check(self, raw: bytes, context: Any) -> bytes:
        started = time.perf_counter()
        telemetry = self.telemetry
        telemetry.in_flight += 1
        try:
            return await self._check(raw, context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never an uncaught error, never an empty answer
            return self._failed(exc, "unexpected error")
        finally:
            telemetry.in_flight -= 1
            telemetry.latency.record(time.perf_counter() - started)

    async def _check(self, raw: bytes, context: Any) -> bytes:
        state = self.state
        try:
            message = CheckRequest.FromString(raw)
        except DecodeError:
            return self._invalid_request()
        response, key = self._cached(state, message)
        if response is not None:
            return response
        try:
            request = to_request(message)
        except UnicodeDecodeError:
            return self._invalid_request()
        try:
            decision = state.engine.decide(request)
        except KeysPending as pending:
            budget = _budget(context)
            if budget <= 0:
                return self._failed(None, "deadline exceeded")
            try:
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(pending.future)), budget)
            except TimeoutError:
                pass  # decided below without keys: a clean denial
            except Exception:
                log.debug("key fetch failed", exc_info=True)
            decision = state.engine.decide(request, may_wait=False)
        return self._finish(state, key, decision, request)

    def _invalid_request(self) -> bytes:
        self.telemetry.decisions[(Reason.INVALID_REQUEST.value, "none")] += 1
        return _INVALID_REQUEST


def _budget(context: Any) -> float:
    remaining = context.time_remaining() if context is not None else None
    if remaining is None:
        return DEFAULT_WAIT
    return min(DEFAULT_WAIT, remaining - DEADLINE_MARGIN)


def _request_id(message: Any) -> str | None:
    value = message.attributes.request.http.headers.get("x-request-id")
    if value is None or len(value) > 128:
        return None
    return str(value)


_INVALID_REQUEST = to_response(Decision(allowed=False, reason=Reason.INVALID_REQUEST), None).SerializeToString()

