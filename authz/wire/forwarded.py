"""The trusted forwarding headers of an HTTP call: the client's address in
``x-forwarded-for`` and its SPIFFE ID in ``x-forwarded-client-cert``, read
only as far as the operator says the proxies in front are trusted."""

from __future__ import annotations

# The one splitter of x-forwarded-client-cert (quotes respected), shared with
# the certificates credential, which reads the same elements' Cert=.
from authz.identity.certificate import split_quoted

XFF = "x-forwarded-for"
XFCC = "x-forwarded-client-cert"


def forwarded_for(value: str | None, hops: int) -> str:
    """The client address in ``x-forwarded-for``: the entry ``hops`` from
    the right ("" when there are fewer)."""
    if not value or hops <= 0:
        return ""
    entries = [entry.strip() for entry in value.split(",")]
    return entries[-hops] if len(entries) >= hops else ""


def client_cert_uri(value: str | None, element: int = -1) -> str:
    """The ``URI`` of the last element of ``x-forwarded-client-cert`` (the
    one the Envoy in front set for its own downstream), or "" when there is
    none, or more than one, or the header does not parse. Quoted values
    (a certificate's ``Subject`` may hold ``,``, ``;`` and ``=``) are never
    split, so they cannot forge a ``URI``. ``element=-2`` reads the element
    before the last (the last one being the caller's, appended by authz's
    own sidecar: ``--trust-caller-xfcc``)."""
    if not value:
        return ""
    try:
        elements = split_quoted(value, ",")
        if len(elements) < -element:
            return ""
        pairs = split_quoted(elements[element], ";")
    except ValueError:
        return ""
    found = [raw.strip() for key, _, raw in (pair.strip().partition("=") for pair in pairs) if key.lower() == "uri"]
    if len(found) != 1:
        return ""
    uri = found[0]
    if uri.startswith('"'):
        uri = uri[1:-1].replace('\\"', '"')
    return uri
