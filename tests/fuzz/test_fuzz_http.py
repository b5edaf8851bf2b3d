"""The HTTP door (authz.wire.http) and the Check it drives: ASGI scopes as
granian hands them over, with random raw paths and queries, odd methods and
header bytes that are not ASCII or not UTF-8, always end in a 200, a
denial with its reason, or a clean ``invalid_request``; never in an
exception (which the server would answer as ``internal_error``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from authz.errors import OUTCOMES, Reason
from authz.server.service import CheckService
from authz.wire.http import HEADERS_TO_REMOVE
from authz.wire.http_call import InvalidCall
from authz.wire.http_call import _read_headers as read_headers
from tests.fuzz import budget
from tests.fuzz.conftest import HTTP
from tests.fuzz.strategies import (
    HEADER_NAMES,
    addresses,
    header_dicts,
    hosts,
    methods,
    mostly,
    principals,
    targets,
)

PREFIX = HTTP.settings.prefix.encode()
LOOP = asyncio.new_event_loop()


def answered(answer: Any) -> tuple[bool, Reason]:
    """(allowed, reason) of the door's (status, headers, body), checking it
    is what Envoy's HTTP service reads as meant: 200 to allow, else the
    reason's status with a JSON body naming it."""
    status, headers, body = answer
    assert all(isinstance(name, bytes) and isinstance(value, bytes) for name, value in headers)
    names = [name for name, _ in headers]
    if status == 200:
        assert body == b""
        assert names.count(HEADERS_TO_REMOVE.encode()) <= 1
        return True, Reason.ALLOWED
    reason = Reason(json.loads(body)["reason"])
    assert status == OUTCOMES[reason].http_status != 200
    assert (b"www-authenticate" in names) == (status == 401)
    return False, reason


def check(service: CheckService, scope: dict[str, Any]) -> tuple[bool, Reason]:
    """One call as the HTTP door's ASGI app makes it, and the same steps
    again without the last-resort handler: only a call the door cannot read
    may raise, and only :class:`authz.wire.http_call.InvalidCall`."""
    allowed, reason = answered(LOOP.run_until_complete(service.check_async(HTTP, scope, 1.0)))
    assert reason is not Reason.INTERNAL_ERROR, "an exception reached the Check (see the log)"
    try:
        call = HTTP.parse(scope)
        request = HTTP.to_request(call)
    except HTTP.invalid:
        assert reason is Reason.INVALID_REQUEST
        return allowed, reason
    HTTP.summary(call)
    service.state.key_of[HTTP.name](call)
    decision = service.state.engine.decide(request, may_wait=False)
    assert (decision.allowed, decision.reason) == (allowed, reason)
    return allowed, reason


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@st.composite
def scopes(draw: st.DrawFn) -> dict[str, Any]:
    target = draw(targets)
    path, _, query = target.partition("?")
    raw_path = draw(mostly(st.just(PREFIX + _encoded(path)),
                           st.one_of(st.binary(max_size=20), st.just(_encoded(path)),
                                     st.binary(max_size=20).map(lambda b: PREFIX + b))))
    query_string = draw(mostly(st.just(_encoded(query)), st.binary(max_size=20)))
    headers = draw(header_dicts())
    headers.setdefault("host", draw(hosts))
    headers.setdefault("x-forwarded-for", "203.0.113.1, " + draw(addresses))
    principal = draw(principals)
    if principal:
        headers.setdefault("x-forwarded-client-cert", draw(mostly(st.just(f'By=spiffe://x;URI={principal}'),
                                                                  st.text(max_size=40))))
    pairs = [(name.encode("utf-8", "surrogatepass"), _encoded(value)) for name, value in headers.items()]
    # Raw bytes as a client or a misbehaving proxy may send them: not ASCII, not UTF-8.
    pairs += draw(mostly(st.just([]), st.lists(st.tuples(
        st.one_of(st.sampled_from([n.encode() for n in HEADER_NAMES]), st.binary(min_size=1, max_size=8)),
        st.binary(max_size=16)), max_size=3)))
    return {"type": "http", "method": draw(methods), "raw_path": raw_path, "query_string": query_string,
            "headers": draw(st.permutations(pairs))}


@budget(400)
@given(scope=scopes())
def test_random_calls_are_decided(service: CheckService, scope: dict[str, Any]) -> None:
    first = check(service, scope)
    event(first[1].value)
    assert check(service, scope) == first


def _one_by_one(pairs: list[tuple[bytes, bytes]]) -> tuple[dict[str, str], int] | None:
    """What the headers must read as, header by header: names lower-cased,
    repeated ones joined with ','; None where a name is not ASCII or a value
    not UTF-8."""
    headers: dict[str, str] = {}
    try:
        for name, value in pairs:
            text = name.decode("ascii").lower()
            headers[text] = f"{headers[text]},{value.decode('utf-8')}" if text in headers else value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return headers, sum(len(name) + len(value) for name, value in pairs)


_NAMES = st.one_of(st.sampled_from([n.encode() for n in HEADER_NAMES]), st.sampled_from([b"X-Tenant", b"Host", b"a"]),
                   st.binary(min_size=1, max_size=6))


@budget(600)
@given(pairs=st.lists(st.tuples(_NAMES, st.one_of(st.binary(max_size=12), st.text(max_size=6).map(str.encode))),
                      max_size=6))
def test_every_header_block_reads_as_it_does_header_by_header(pairs: list[tuple[bytes, bytes]]) -> None:
    # The common block (ASCII, lower-case, none repeated) is read by C-level
    # steps, any other one header by header: both must give the same.
    expected = _one_by_one(pairs)
    try:
        headers, size = read_headers(pairs)
    except InvalidCall:
        assert expected is None
        return
    assert expected is not None
    assert ({name.decode(): value.decode() for name, value in headers.items()}, size) == expected
