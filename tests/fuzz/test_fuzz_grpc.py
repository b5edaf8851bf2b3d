"""The gRPC door (authz.wire.grpc) and the Check it drives: random bytes and
random CheckRequests, as the server receives them, always end in a decision
(allow, or a denial with its reason) or a clean ``invalid_request``, never
in an exception (which the server would answer as ``internal_error``)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from authz.errors import OUTCOMES, Reason
from authz.server.service import CheckService
from authz.wire.grpc import GRPC, CheckRequest, CheckResponse
from tests.fuzz import budget
from tests.fuzz.strategies import (
    addresses,
    header_dicts,
    hosts,
    methods,
    mostly,
    principals,
    targets,
)


def answered(raw: bytes) -> tuple[bool, Reason]:
    """(allowed, reason) of a serialized CheckResponse, checking that it is
    one Envoy reads as meant: an explicit status, and a denial's HTTP status,
    JSON body and gRPC code all saying the same reason."""
    response = CheckResponse.FromString(raw)
    assert response.HasField("status")
    if response.status.code == 0:  # Envoy allows on OK, whatever else the response holds
        assert not response.HasField("denied_response")
        return True, Reason.ALLOWED
    assert response.HasField("denied_response")
    reason = Reason(json.loads(response.denied_response.body)["reason"])
    outcome = OUTCOMES[reason]
    assert (response.status.code, response.status.message) == (outcome.grpc_code, reason.value)
    assert response.denied_response.status.code == outcome.http_status != 200
    return False, reason


def check(service: CheckService, raw: bytes) -> tuple[bool, Reason]:
    """One Check as the thread-pool server makes it, and the same steps
    again without the server's last-resort handler: only an input the door
    cannot read may raise, and only the door's ``invalid`` types."""
    allowed, reason = answered(service.check_sync(raw, None))
    assert reason is not Reason.INTERNAL_ERROR, "an exception reached the Check servicer (see the log)"
    state = service.state
    try:
        message = GRPC.parse(raw)
        request = GRPC.to_request(message)
    except GRPC.invalid:
        assert reason is Reason.INVALID_REQUEST
        return allowed, reason
    GRPC.summary(message)
    GRPC.trace_headers(message)
    state.key_of[GRPC.name](message)
    decision = state.engine.decide(request, may_wait=False)
    assert answered(GRPC.encode(decision, GRPC.request_id_of(message))) == (decision.allowed, decision.reason)
    assert (decision.allowed, decision.reason) == (allowed, reason)
    return allowed, reason


@budget(4000)
@given(raw=st.binary(max_size=300))
def test_random_bytes_are_decided_or_refused(service: CheckService, raw: bytes) -> None:
    check(service, raw)


@st.composite
def check_requests(draw: st.DrawFn) -> Any:
    message = CheckRequest()
    attributes = message.attributes
    http = attributes.request.http
    target = draw(targets)
    method = draw(methods)
    host = draw(hosts)
    headers = draw(header_dicts())
    # Envoy fills the fields and the pseudo-headers; either may be missing.
    where = draw(mostly(st.just("both"), st.sampled_from(["fields", "pseudo-headers", "neither"])))
    if where in ("fields", "both"):
        http.path, http.method, http.host = target, method, host
    if where in ("pseudo-headers", "both"):
        headers.update({":path": target, ":method": method, ":authority": host})
    http.scheme = draw(mostly(st.just("https"), st.sampled_from(["http", ""])))
    if draw(st.integers(0, 4)) == 0:
        # Raw header bytes (Envoy's header_map), not always UTF-8.
        for name, value in headers.items():
            entry = http.header_map.headers.add()
            entry.key = name
            if draw(st.booleans()):
                entry.raw_value = draw(st.one_of(st.just(value.encode()), st.binary(max_size=12)))
            else:
                entry.value = value
    else:
        http.headers.update(headers)
    for peer in (attributes.source, attributes.destination):
        peer.address.socket_address.address = draw(addresses)
        peer.address.socket_address.port_value = draw(mostly(st.just(8080), st.integers(0, 2**32 - 1)))
        peer.principal = draw(principals)
    attributes.context_extensions.update(draw(mostly(st.just({}), st.dictionaries(
        st.one_of(st.just("mode"), st.text(max_size=6)), st.one_of(st.just("open"), st.text(max_size=8)), max_size=3))))
    return message


@budget(400)
@given(message=check_requests())
def test_random_check_requests_are_decided(service: CheckService, message: Any) -> None:
    raw = message.SerializeToString()
    first = check(service, raw)
    event(first[1].value)
    # Asked again (from the decision cache when the first was cacheable): the same answer.
    assert check(service, raw) == first
