"""Fail fast, never share silently: the addresses ``authz serve`` listens on.

The workers of one authz share the gRPC address (and the HTTP door's) through
``SO_REUSEPORT``. The kernel lets any process of the same user join such a
group, so a second authz started on a running one's port would bind without
error and the kernel would hand it part of the running one's connections, to
be answered with its own policy.

So before any worker starts, the supervisor binds every address its workers
will listen on *without* ``SO_REUSEPORT``: that bind fails when any socket
(another authz's included, whatever its options) holds the address, and
``authz serve`` exits at once naming it. Each socket bound is then kept,
bound and never listening (it is handed no connection), with
``SO_REUSEPORT`` set: this authz's workers join it, and the next authz's
plain bind fails for as long as this one runs. The check and the hold live
in the supervisor before any worker exists, whatever starts the workers
(spawned, or forked from a preloaded parent, which would inherit the held
sockets harmlessly).
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field

#: The exit status of ``authz serve`` (and of a worker) that cannot listen
#: on an address it must.
EXIT_ADDRESS_IN_USE = 3


class AddressInUse(OSError):
    """An address authz must listen on is taken (or cannot be bound)."""

    def __init__(self, address: str, what: str, error: OSError) -> None:
        self.address = address
        self.what = what
        super().__init__(error.errno, describe(address, what, error))

    def __str__(self) -> str:
        return str(self.strerror)


def describe(address: str, what: str, error: OSError) -> str:
    """``cannot listen on ADDRESS (WHAT): REASON``, as ``authz serve`` says it."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    return f"cannot listen on {address} ({what}): {reason.lower()}"


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of ``HOST:PORT`` or ``[V6]:PORT``; an empty host is every
    IPv4 address, as the servers read it."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass
class Holds:
    """The sockets the supervisor keeps bound while it runs."""

    sockets: list[socket.socket] = field(default_factory=list)

    def claim(self, address: str, what: str) -> None:
        """Bind every socket address ``address`` resolves to without
        ``SO_REUSEPORT`` (raises :class:`AddressInUse` when one is taken),
        then keep it with ``SO_REUSEPORT`` set for this authz's workers. Port
        0 (any free port, a different one per socket) is not checked."""
        host, port = split_address(address)
        if port == 0:
            return
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except OSError as exc:
            raise AddressInUse(address, what, exc) from None
        for family, kind, proto, _name, sockaddr in found:
            sock = socket.socket(family, kind, proto)
            try:
                # Not a sharing option: SO_REUSEADDR lets a restart bind
                # beside connections still in TIME_WAIT, never beside a listener.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(sockaddr)
                # Kept: not SO_REUSEADDR any more (two sockets that both have
                # it may share an address while neither listens: a stranger's
                # claim would pass while our workers restart), SO_REUSEPORT
                # for our workers to join.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            except OSError as exc:
                sock.close()
                raise AddressInUse(address, what, exc) from None
            self.sockets.append(sock)

    def release(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self.sockets.clear()


def claim_all(addresses: list[tuple[str, str]]) -> Holds:
    """Claim each (address, what) in turn; on the first that is taken, let
    go of those claimed and raise :class:`AddressInUse`."""
    holds = Holds()
    try:
        for address, what in addresses:
            holds.claim(address, what)
    except AddressInUse:
        holds.release()
        raise
    return holds
