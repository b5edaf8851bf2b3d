"""The one plug point for credentials: what a credential source is to the
engine, the decision cache and the policy compiler.

A source reads one header of the request (:attr:`Credential.header_name`:
the decision cache keys on it, and ``envoy-config`` forwards it), returns
the :class:`~authz.identity.base.Identity` it verified, None when the
request carries no such credential (the next source is asked), or raises a
:class:`~authz.errors.CredentialError` (a 401 whatever the rules say; with
``retry`` set when an outside call under way could change the answer).
``kind`` is the ``identity.kind`` it yields.

Two optional members, for a source that reads more than one header or an
attribute that is not a header (the client certificate,
:mod:`authz.identity.certificate`): ``header_names`` (every header it
reads; default ``(header_name,)``) and ``reads`` (request attribute paths,
like ``("source", "certificate")``, which join the policy's
:class:`~authz.policy.Reads` so the decision cache keys on them). The
compiler reads them with :func:`headers_of` and :func:`reads_of`.

A new credential (a client certificate, an introspected token, a session
cookie) is one module implementing this protocol and one entry in
:data:`authz.config.compile.CREDENTIAL_SECTIONS`, which compiles its policy section
into sources; the engine, the doors and the caches need no edit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from authz.identity.base import Identity, TokenCache
    from authz.request import Request


class Credential(Protocol):
    @property
    def name(self) -> str:
        """How ``authz explain`` names the source (``api_key (header x-api-key)``)."""
    @property
    def kind(self) -> str:
        """The ``identity.kind`` of what it verifies."""
    @property
    def header_name(self) -> str:
        """The request header the credential is read from (a cookie: ``cookie``)."""

    def authenticate(self, request: Request, *, now: float, cache: TokenCache | None) -> Identity | None: ...


def headers_of(source: Credential) -> tuple[str, ...]:
    """Every header ``source`` reads (its optional ``header_names``, else its ``header_name``)."""
    names: tuple[str, ...] = getattr(source, "header_names", (source.header_name,))
    return tuple(name for name in names if name)


def reads_of(source: Credential) -> frozenset[tuple[str, ...]]:
    """The request attributes ``source`` reads besides headers (its optional ``reads``)."""
    reads: frozenset[tuple[str, ...]] = getattr(source, "reads", frozenset())
    return reads
