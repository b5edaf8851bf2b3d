"""Claiming the addresses ``authz serve`` listens on (docs/security.md 64):
taken by anyone, with SO_REUSEPORT or not, is refused; once claimed, this
authz's workers share it and nobody else's claim passes."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from authz.server.binding import AddressInUse, Holds, claim_all


def _listener(*, reuseport: bool, port: int = 0) -> socket.socket:
    sock = socket.socket()
    if reuseport:  # as gRPC and granian do in a worker
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


@pytest.fixture
def free() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield f"127.0.0.1:{port}"


@pytest.mark.parametrize("reuseport", [False, True])
def test_an_address_someone_listens_on_is_refused_naming_it(reuseport: bool) -> None:
    with _listener(reuseport=reuseport) as other:
        address = f"127.0.0.1:{other.getsockname()[1]}"
        with pytest.raises(AddressInUse) as caught:
            claim_all([(address, "gRPC door")])
        assert str(caught.value) == f"cannot listen on {address} (gRPC door): address already in use"
        assert caught.value.address == address


def test_a_claimed_address_takes_our_workers_and_refuses_a_second_claim(free: str) -> None:
    holds = claim_all([(free, "gRPC door")])
    try:
        port = int(free.rsplit(":", 1)[1])
        worker = _listener(reuseport=True, port=port)  # what a worker's gRPC server does
        with pytest.raises(AddressInUse):
            claim_all([(free, "gRPC door")])  # another authz
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            accepted, _peer = worker.accept()  # the held socket takes no connection
            accepted.close()
        worker.close()
        with pytest.raises(AddressInUse):  # even with no worker listening
            claim_all([(free, "gRPC door")])
    finally:
        holds.release()
    claim_all([(free, "gRPC door")]).release()  # released: free again


def test_a_failed_claim_lets_go_of_the_ones_before_it(free: str) -> None:
    with _listener(reuseport=False) as other:
        taken = f"127.0.0.1:{other.getsockname()[1]}"
        with pytest.raises(AddressInUse):
            claim_all([(free, "gRPC door"), (taken, "HTTP door")])
    holds = claim_all([(free, "gRPC door")])
    assert len(holds.sockets) == 1
    holds.release()


def test_port_zero_is_not_claimed() -> None:
    holds = Holds()
    holds.claim("127.0.0.1:0", "gRPC door")
    assert holds.sockets == []
