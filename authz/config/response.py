"""The ``response`` section of a policy: what the upstream, the client and
Envoy learn on allow, compiled into a :class:`authz.response_plan.ResponsePlan`.

Every name authz sends is checked here: upstream headers, the identity
token's header, client headers and metadata keys. On the HTTP door they all
travel as headers of one answer, and Envoy sorts them by name (its
``allowed_upstream_headers``, ``allowed_client_headers_on_success`` and
``dynamic_metadata_from_headers`` lists), so no name may serve two of them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import ec

from authz.cel import AttrPath, Expression
from authz.config import schema
from authz.config.source import Path
from authz.identity.keys import parse_ec_key, public_jwk
from authz.identity.signing import IdentityTokenSigner
from authz.metadata import BUILTIN
from authz.response_plan import ResponsePlan

if TYPE_CHECKING:
    from authz.config.compiling import Compiling

_METADATA_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
#: Headers every HTTP answer may carry on its own, or that Envoy reads
#: itself: never a client header or a metadata key.
_ANSWER_HEADERS = frozenset({
    "content-type", "content-length", "cache-control", "date", "server", "www-authenticate", "location", "status",
})


#: What is said of a metadata key named like a hop-by-hop or framing header
#: (``connection``, ``transfer-encoding``, ``host``, ...): the HTTP door
#: carries each key as a header of its answer to Envoy.
_FRAMING_KEY = ("metadata key {!r} is named like a hop-by-hop or framing header, which the HTTP door "
                "could not carry in its answer")


def compile_response(compiler: Compiling, config: schema.ResponseSpec,
                     credential_headers: tuple[str, ...]) -> ResponsePlan:
    """The response plan; problems go to ``compiler``. ``credential_headers``
    are the headers credentials are read from: metadata, which ends up in
    access logs, may not read them."""
    headers = []
    for name, source in config.headers.items():
        path: Path = ("response", "headers", name)
        if compiler.header_name(name, path) is None:
            continue
        expression = compiler.cel(path, source, "string")
        if expression is not None:
            headers.append((name, expression))
    remove = []
    for i, name in enumerate(config.remove):
        if compiler.header_name(name, ("response", "remove", i)) is not None:
            if name in config.headers:
                compiler.problem(("response", "remove", i), f"{name!r} is both set and removed")
            remove.append(name)
    upstream = set(config.headers) | set(remove)
    signer = None
    if config.identity_token is not None:
        signer = identity_token(compiler, config.identity_token, upstream)
        upstream.add(config.identity_token.header)
    client = client_headers(compiler, config, upstream)
    metadata = metadata_plan(compiler, config, upstream | set(config.client_headers), credential_headers)
    lines = {f"header {name}": compiler.located.line(("response", "headers", name)) for name, _ in headers}
    lines.update((f"client header {name}", compiler.located.line(("response", "client_headers", name)))
                 for name, _ in client)
    lines.update((f"metadata {key}", compiler.located.line(("response", "metadata", key))) for key, _ in metadata)
    if signer is not None:
        lines["identity token"] = compiler.located.line(("response", "identity_token"))
    return ResponsePlan(tuple(headers), tuple(remove), signer, client, metadata, lines)


def client_headers(compiler: Compiling, config: schema.ResponseSpec,
                   upstream: set[str]) -> tuple[tuple[str, Expression], ...]:
    out = []
    for name, sources in config.client_headers.items():
        path: Path = ("response", "client_headers", name)
        if compiler.header_name(name, path, "{!r} is not a header authz may send to the client "
                                "(lower-case names; not pseudo, hop-by-hop or x-envoy- headers)") is None:
            continue
        if name.startswith("x-envoy-") or name in _ANSWER_HEADERS:
            compiler.problem(path, f"{name!r} is not a header authz may send to the client "
                             "(Envoy reads it, or every answer has its own)")
            continue
        if name in upstream:
            compiler.problem(path, f"{name!r} is also an upstream header: give the client its own header name")
            continue
        if isinstance(sources, str):
            located: list[tuple[Path, str]] = [(path, sources)]
        else:
            located = [((*path, i), source) for i, source in enumerate(sources)]
            if not located:
                compiler.problem(path, "an empty list sends nothing; omit the header")
        for where, source in located:
            expression = compiler.cel(where, source, "strings")
            if expression is not None:
                out.append((name, expression))
    return tuple(out)


def metadata_plan(compiler: Compiling, config: schema.ResponseSpec, headers: set[str],
                  credential_headers: tuple[str, ...]) -> tuple[tuple[str, Expression], ...]:
    out = []
    for key, source in config.metadata.items():
        path: Path = ("response", "metadata", key)
        if key in BUILTIN:
            compiler.problem(path, f"metadata key {key!r} is set by authz on every answer ({', '.join(BUILTIN)})")
            continue
        if _METADATA_KEY.fullmatch(key) and compiler.header_name(key, path, _FRAMING_KEY) is None:
            continue
        if not _METADATA_KEY.fullmatch(key) or key.startswith("x-envoy-") or key in _ANSWER_HEADERS:
            compiler.problem(path, f"invalid metadata key {key!r} (lower-case letters, digits, '-' and '_', "
                             "starting with a letter, at most 63; not a header every answer has)")
            continue
        if key in headers:
            compiler.problem(path, f"metadata key {key!r} is also a header authz sends: "
                                   "the HTTP door could not tell them apart")
            continue
        expression = compiler.cel(path, source, "value")
        if expression is None:
            continue
        secret = _credentials_read(expression.reads, credential_headers)
        if secret:
            compiler.problem(path, f"metadata may not read {secret} (it ends up in access logs)")
            continue
        out.append((key, expression))
    return tuple(out)


def _credentials_read(reads: frozenset[AttrPath], credential_headers: tuple[str, ...]) -> str | None:
    """What of the credentials an expression reads, said in words; None when
    it reads none. Reading every header (``request.headers`` as a whole,
    or ``request``) reads them all."""
    for path in sorted(reads):
        if path[0] != "request":
            continue
        if len(path) == 1 or (path[1] == "headers" and len(path) == 2):
            return "every request header, credentials included"
        if path[1] == "headers" and path[2].lower() in credential_headers:
            return f"the credential header {path[2]!r}"
    return None


def identity_token(compiler: Compiling, config: schema.IdentityTokenSpec,
                   taken: set[str]) -> IdentityTokenSigner | None:
    path: Path = ("response", "identity_token")
    ok = compiler.header_name(config.header, (*path, "header")) is not None
    if config.header in taken:
        compiler.problem((*path, "header"), f"{config.header!r} is also set or removed in response")
        ok = False
    private = compiler.key_file(config.signing_key, (*path, "signing_key"), parse_ec_key)
    if private is not None and not isinstance(private, ec.EllipticCurvePrivateKey):
        compiler.problem((*path, "signing_key"),
                         f"key file {config.signing_key!r} holds a public key; signing needs the private key")
        private = None
    jwks = []
    for i, name in enumerate(config.extra_public_keys):
        extra = compiler.key_file(name, (*path, "extra_public_keys", i), parse_ec_key)
        if extra is not None:
            public = extra.public_key() if isinstance(extra, ec.EllipticCurvePrivateKey) else extra
            jwks.append(public_jwk(public))
    if private is None or not ok:
        return None
    own = public_jwk(private.public_key())
    return IdentityTokenSigner(
        header=config.header,
        issuer=config.issuer,
        audience=config.audience,
        ttl=config.ttl,
        key=private,
        kid=own["kid"],
        jwks=(own, *(k for k in jwks if k["kid"] != own["kid"])),
    )
