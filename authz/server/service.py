"""The Check servicer: convert, decide, convert back; with the decision cache.

Request bytes come in unparsed (the servicer parses them itself, so a message
that does not parse is a clean deny, not a gRPC INTERNAL error). A cache hit
costs a parse, a key, a lookup and returns bytes prepared when the decision
was made: no JSON, no signature, no CEL, no new CheckResponse.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import StatusCode, Tracer

from authz.callers import Callers
from authz.decision import Decision
from authz.engine import CallPending, Clock, Engine
from authz.errors import Reason
from authz.policy import Policy
from authz.reply import echoed_request_id
from authz.request import Request
from authz.response_plan import ROOMY_BYTES
from authz.server.cache import Cached, ExpiringLRU, VerifiedTokenCache, decision_cache
from authz.server.caller_identity import CallerReader
from authz.server.decision_log import DecisionLog, Where
from authz.server.telemetry import DecisionLabels, DoorMeters, Telemetry
from authz.server.tracing import carried_ids, start_check_span
from authz.wire import Door
from authz.wire.grpc import GRPC, body_size

log = logging.getLogger("authz.check")

#: Longest a Check waits for a key set when the call carries no deadline.
DEFAULT_WAIT = 5.0
#: Seconds a threaded Check beyond the waiters' quota may wait for a young key-set fetch (``CheckService._young_for``).
OVERFLOW_WAIT = 0.25
#: Time kept back from the caller's deadline to answer before it expires:
#: a tenth of what remains, at least 20 ms.
DEADLINE_MARGIN = 0.02


class PolicyState:
    """One policy as a worker runs it: engine, caches, cache-key function."""

    def __init__(self, policy: Policy, clock: Clock, *, dry_run: bool = False,
                 doors: tuple[Door, ...] = (GRPC,)) -> None:
        self.policy = policy
        self.clock = clock
        self.tokens = VerifiedTokenCache(policy.token_cache_size, time=clock.time, monotonic=clock.monotonic,
                                         max_bytes=policy.token_cache_bytes)
        self.engine = Engine(policy, clock=clock, token_cache=self.tokens, dry_run=dry_run)
        self.decisions: ExpiringLRU[Cached] = decision_cache(policy.decision_cache_size, policy.decision_cache_bytes,
                                                             clock.monotonic)
        #: Each door's decision-cache key function, by door name. Keys of
        #: different doors never collide (each digest starts with its door's
        #: name), so the doors share one cache.
        self.key_of: dict[str, Callable[[Any], Hashable | None]] = {
            door.name: door.make_cache_key(policy.reads, policy.credential_headers)
            if policy.decision_cache_size > 0 else (lambda _message: None)
            for door in doors
        }
        #: Each door's ``callers:`` section when it binds that door, else None.
        callers = policy.callers
        self.bound: dict[str, Callers | None] = {
            door.name: callers if callers is not None and callers.binds(door.name) else None for door in doors
        }

    def invalidate(self) -> None:
        """Keys changed: forget verified tokens and cached decisions, and
        store nothing that was being computed meanwhile."""
        # Tokens first: a decision that reads the decisions' epoch after this
        # can only have been made with a token verified after it too.
        self.tokens.invalidate()
        self.decisions.invalidate()

    def retire(self) -> None:
        """This state was replaced: checks still running on it are answered,
        but neither of its caches serves or stores anything again (key
        changes reach only the state in force)."""
        self.tokens.retire()
        self.decisions.retire()

    def cache_sources(self) -> dict[str, Any]:
        return {
            "decisions": (self.decisions.stats, len(self.decisions), self.decisions.estimated_bytes()),
            "tokens": (self.tokens.stats, len(self.tokens), self.tokens.estimated_bytes()),
        }


def _issuer_label(decision: Decision) -> str:
    return decision.identity.source or "none"


def _labels(decision: Decision, door: str) -> DecisionLabels:
    return (decision.reason.value, _issuer_label(decision), door, decision.rule or "",
            "allow" if decision.allowed else "deny")


@dataclass(slots=True)
class Handled:
    """What one Check produced, for the bookkeeping after it."""

    response: Any
    decision: Decision | None
    cache: str
    message: Any = None
    door: Door = GRPC
    label: DecisionLabels | None = None  # the decision's metric labels, when known beforehand (a cache hit)


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A Check that needs a key set being fetched before it can be decided."""

    door: Door
    state: PolicyState
    message: Any
    request: Request
    key: Hashable | None
    future: Any


class Pending:
    """A Check waiting for a key set: what :meth:`CheckService.check_now`
    gives when it cannot answer at once."""

    __slots__ = ("started", "step")

    def __init__(self, step: _Waiting, started: float) -> None:
        self.step = step
        self.started = started


class CheckService:
    """Answers Checks through every door for the policy in force (swapped on reload)."""

    def __init__(self, state: PolicyState, telemetry: Telemetry, *, decision_log: DecisionLog | None = None,
                 tracer: Tracer | None = None, max_waiting: int = 1, overflow_wait: float = OVERFLOW_WAIT,
                 caller_of: Mapping[str, CallerReader] | None = None, grpc_door: Door = GRPC) -> None:
        self.state = state
        #: The gRPC door this server's Check RPC goes through (``ServeOptions.grpc_door``).
        self.grpc_door = grpc_door
        #: How each door with a caller identity reads it (authz.server.caller_identity);
        #: a door bound by ``callers:`` without one refuses every Check.
        self.caller_of: Mapping[str, CallerReader] = caller_of or {}
        self.telemetry = telemetry
        self.decision_log = decision_log
        self.tracer = tracer
        #: The gRPC door's meters, bound once (check_sync is only ever gRPC),
        #: and each door's by the door itself (a lookup by identity per Check).
        self._grpc = telemetry.door(GRPC.name)
        self._meters: dict[Any, DoorMeters] = {grpc_door: self._grpc}
        self._lock = threading.Lock()
        #: check_sync: how many pool threads may block waiting for a key set
        #: for their whole budget; the others wait ``overflow_wait`` at most.
        self._waiters = threading.BoundedSemaphore(max(1, max_waiting))
        self.overflow_wait = overflow_wait
        #: Key-set fetches being waited for beyond the quota: when first seen.
        self._young: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        #: check_sync: Checks blocked on a key-set fetch right now.
        self.waiting = 0

    # The gRPC server flavours and the HTTP door share every step but the
    # wait for a key set.

    async def check(self, raw: bytes, context: Any) -> bytes:
        """The Check RPC for grpc.aio (raw bytes in and out)."""
        answer: bytes = await self.check_async(self.grpc_door, raw, _budget(context), context)
        return answer

    async def check_async(self, door: Door, raw: Any, budget: float | None = None, context: Any = None) -> Any:
        """One Check on an event loop, waiting up to ``budget`` seconds for a
        key set (None: within the time the call itself says it has, see
        ``Door.call_timeout``). Always a decision: an exception or a missed
        deadline is a denial, never an empty answer."""
        answer = self.check_now(door, raw, context)
        if answer.__class__ is Pending:
            return await self.check_later(answer, budget)
        return answer

    def check_now(self, door: Door, raw: Any, context: Any = None) -> Any:
        """The answer to one Check, or, when it needs a key set being
        fetched, a :class:`Pending` to finish with :meth:`check_later` on an
        event loop. A decision-cache hit is answered here without a
        coroutine. Checks on one event loop overlap only while they wait, so
        only a waiting one counts as in flight."""
        started = time.perf_counter()
        handled: Handled | None = None
        pending: Pending | None = None
        meters = self._meters.get(door) or self._bind(door)
        try:
            step = self._begin(door, raw, context)
            if isinstance(step, _Waiting):
                with self._lock:
                    meters.in_flight += 1
                pending = Pending(step, started)  # accounted when check_later finishes it
                return pending
            handled = step
        except Exception as exc:
            log.error("check failed, denying (internal_error)", exc_info=exc)
            handled = Handled(door.internal_error, _INTERNAL_ERROR_DECISION, "none", door=door)
        finally:
            if pending is None:
                self._account(handled, started, meters, in_flight=False)
        return handled.response

    async def check_later(self, pending: Pending, budget: float | None = None) -> Any:
        """Finish a Check :meth:`check_now` left waiting for a key set."""
        step = pending.step
        handled: Handled | None = None
        try:
            if budget is None:
                budget = _within(step.door.call_timeout(step.message))
            if budget > 0:
                try:
                    await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(step.future)), budget)
                except TimeoutError:  # decided below without the keys: a clean denial
                    log.debug("key set not fetched within %.3f s", budget)
                except Exception:
                    log.debug("key fetch failed", exc_info=True)
            handled = self._complete(step)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("check failed, denying (internal_error)", exc_info=exc)
            handled = Handled(step.door.internal_error, _INTERNAL_ERROR_DECISION, "none", door=step.door)
        finally:
            self._account(handled, pending.started, self._meters.get(step.door) or self._bind(step.door))
        return handled.response

    def check_sync(self, raw: bytes, context: Any) -> bytes:
        """The Check RPC for the thread-pool gRPC server: the same steps,
        waiting for a key set by blocking this pool thread (within the
        call's deadline)."""
        started = self._enter()
        handled: Handled | None = None
        try:
            step = self._begin(self.grpc_door, raw, context)
            if isinstance(step, _Waiting):
                budget = _budget(context)
                # Only some pool threads may block on a key fetch for long, so
                # a slow issuer can never take every thread from the other
                # issuers; the others wait only while the fetch is young.
                if budget > 0 and self._waiters.acquire(blocking=False):
                    try:
                        self._wait_for(step.future, budget)
                    finally:
                        self._waiters.release()
                elif budget > 0:
                    self._wait_for(step.future, min(budget, self._young_for(step.future)))
                step = self._complete(step)
            handled = step
        except Exception as exc:
            log.error("check failed, denying (internal_error)", exc_info=exc)
            handled = Handled(GRPC.internal_error, _INTERNAL_ERROR_DECISION, "none")
        finally:
            self._account(handled, started, self._grpc)
        response: bytes = handled.response
        return response

    def _bind(self, door: Door) -> DoorMeters:
        meters = self._meters[door] = self.telemetry.door(door.name)
        return meters

    def _young_for(self, future: Any) -> float:
        """How much longer a Check beyond the waiters' quota may wait for
        ``future``: what is left of :data:`OVERFLOW_WAIT` since the first
        such Check saw it. A fetch that answers fast (a key rotation) is
        waited for by all; one that is slow holds the extra threads at most
        that long per fetch, and unknown-``kid`` refetches are rate-limited."""
        now = time.monotonic()
        with self._lock:
            first = self._young.setdefault(future, now)
        return first + self.overflow_wait - now

    def _wait_for(self, future: Any, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._lock:
            self.waiting += 1
        try:
            future.result(timeout=seconds)
        except Exception:
            log.debug("key fetch not done", exc_info=True)
        finally:
            with self._lock:
                self.waiting -= 1

    def _enter(self) -> float:
        with self._lock:
            self._grpc.in_flight += 1
        return time.perf_counter()

    def _account(self, handled: Handled | None, started: float, meters: DoorMeters, *, in_flight: bool = True) -> None:
        elapsed = time.perf_counter() - started
        telemetry = self.telemetry
        decision = handled.decision if handled is not None else None
        with self._lock:
            if in_flight:
                meters.in_flight -= 1
            meters.latency.record(elapsed)
            if decision is not None:
                label = handled.label or _labels(decision, handled.door.name)  # type: ignore[union-attr]
                telemetry.decisions[label] += 1
                for rule in decision.dry_run_denials:
                    telemetry.dry_run_denials[rule] += 1
                for omitted in decision.omitted:
                    telemetry.omissions[omitted] += 1
        if handled is None or decision is None:
            return
        span = self._span(handled, started, elapsed) if self.tracer is not None else None
        if self.decision_log is not None and self.decision_log.wanted(decision):
            self._log(handled, elapsed, span)

    def _begin(self, door: Door, raw: Any, context: Any = None) -> Handled | _Waiting:
        state = self.state
        try:
            message = door.parse(raw)
        except door.invalid:
            return Handled(door.invalid_request, _INVALID_REQUEST_DECISION, "none", door=door)
        callers = state.bound[door.name]
        if callers is not None:  # before the cache: a cached allow never reaches a caller not admitted
            reader = self.caller_of.get(door.name)
            caller = reader(message, context) if reader is not None else ""
            destination = door.destination_principal(message) if callers.reads_destination else ""
            if not callers.admits(caller, destination):
                return self._refused(callers, door, message, caller, destination)
        # A request whose own headers may leave no room for a cached answer
        # within Envoy's limits is decided uncached (docs/security.md 65): a
        # serialized CheckRequest is longer than its headers; the HTTP
        # door's key function checks the size it measured, and both key
        # functions the header count (a body Envoy passes on is not headers).
        key = None if type(raw) is bytes and len(raw) > ROOMY_BYTES and len(raw) - body_size(message) > ROOMY_BYTES \
            else state.key_of[door.name](message)
        if key is not None:
            hit = state.decisions.get(key)
            if hit is not None:
                response = hit.response
                if response is None:  # a denial: its body names this request's id
                    response = door.encode(hit.decision, door.request_id_of(message))
                return Handled(response, hit.decision, "hit", message, door, hit.label)
        try:
            request = door.to_request(message)
        except door.invalid:
            return Handled(door.invalid_request, _INVALID_REQUEST_DECISION, "none", message, door)
        epoch = state.decisions.epoch  # before any key is read: a key change from here on refuses the put
        try:
            decision = state.engine.decide(request)
        except CallPending as pending:
            return _Waiting(door, state, message, request, key, pending.future)
        return self._store(door, state, message, request, key, decision, epoch)

    @staticmethod
    def _refused(callers: Callers, door: Door, message: Any, caller: str, destination: str) -> Handled:
        """The ``untrusted_caller`` denial of a Check whose caller ``callers:``
        does not admit (no identity token, no upstream header), logged and
        counted as every decision is."""
        if not callers.reads_destination:  # named in the log all the same
            destination = door.destination_principal(message)
        decision = Decision(allowed=False, reason=Reason.UNTRUSTED_CALLER, cacheable=False,
                            detail=callers.refusal(caller, destination))
        return Handled(door.encode(decision, door.request_id_of(message)), decision, "none", message, door)

    def _complete(self, waiting: _Waiting) -> Handled:
        state = waiting.state
        epoch = state.decisions.epoch
        decision = state.engine.decide(waiting.request, may_wait=False)
        return self._store(waiting.door, state, waiting.message, waiting.request, waiting.key, decision, epoch)

    @staticmethod
    def _store(door: Door, state: PolicyState, message: Any, request: Request, key: Hashable | None,
               decision: Decision, epoch: int) -> Handled:
        response = door.encode(decision, echoed_request_id(request.headers))
        if key is not None and decision.cacheable:
            policy = state.policy
            ttl = policy.decision_ttl if decision.allowed else policy.deny_ttl
            if decision.valid_until is not None:
                ttl = min(ttl, decision.valid_until - state.clock.time())
            # The entry keeps a slim decision: 100,000 entries must fit a worker.
            entry = Cached(decision.slim(), response if decision.allowed else None, _labels(decision, door.name))
            state.decisions.put(key, entry, ttl, epoch=epoch)
        return Handled(response, decision, "miss" if key is not None else "none", message, door)

    @staticmethod
    def _fields(handled: Handled) -> tuple[str | None, str, str, str]:
        return handled.door.summary(handled.message) if handled.message is not None else (None, "", "", "")

    def _log(self, handled: Handled, elapsed: float, span: Any) -> None:
        assert self.decision_log is not None and handled.decision is not None
        request_id, method, host, path = self._fields(handled)
        message, door = handled.message, handled.door
        client = destination = trace_id = span_id = None
        parent_id = None
        if message is not None:
            client, destination = door.addresses(message)
            trace_id, parent_id = carried_ids(door.trace_headers(message))
        if span is not None:
            context = span.get_span_context()
            trace_id, span_id = format(context.trace_id, "032x"), format(context.span_id, "016x")
        where = Where(door.name, client, destination, trace_id, span_id, parent_id, self.state.policy.generation)
        self.decision_log.write(handled.decision, request_id=request_id, method=method, host=host, path=path,
                                latency=elapsed, cache=handled.cache, where=where)

    def _span(self, handled: Handled, started: float, elapsed: float) -> Any:
        assert self.tracer is not None and handled.decision is not None
        decision = handled.decision
        request_id, method, _host, path = self._fields(handled)
        headers = handled.door.trace_headers(handled.message) if handled.message is not None else {}
        end_ns = time.time_ns()
        span = start_check_span(self.tracer, headers, {
            "authz.decision": "allow" if decision.allowed else "deny",
            "authz.reason": decision.reason.value,
            "authz.rule": decision.rule or "",
            "authz.issuer": _issuer_label(decision),
            "authz.identity.kind": decision.identity.kind,
            "authz.server.cache": handled.cache,
            "http.request.method": method,
            "url.path": path.split("?", 1)[0],
            "envoy.request_id": request_id or "",
        }, start_time=end_ns - int(elapsed * 1e9))
        if decision.reason is Reason.INTERNAL_ERROR:
            span.set_status(StatusCode.ERROR, "internal_error")
        span.end(end_time=end_ns)
        return span


def _budget(context: Any) -> float:
    return _within(context.time_remaining() if context is not None else None)


def _within(remaining: float | None) -> float:
    """How long a Check with ``remaining`` seconds left (None: unknown) may
    wait for a key set: :data:`DEFAULT_WAIT` at most, and short of the
    deadline by a margin, so the denial still reaches Envoy in time."""
    if remaining is None:
        return DEFAULT_WAIT
    return min(DEFAULT_WAIT, float(remaining) - max(DEADLINE_MARGIN, float(remaining) / 10))


_INVALID_REQUEST_DECISION = Decision(allowed=False, reason=Reason.INVALID_REQUEST, cacheable=False)
_INTERNAL_ERROR_DECISION = Decision(allowed=False, reason=Reason.INTERNAL_ERROR, cacheable=False)

