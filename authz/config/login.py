"""The issuers' ``login:`` compiled into :class:`authz.login.Login` and
their session sources (:class:`authz.login.session.SessionSource`): a
credential section of :data:`authz.config.compile.CREDENTIAL_SECTIONS`,
asked after every other (a request with a bearer token is decided by it)."""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Protocol

from authz import matchers
from authz.config import schema
from authz.config.compiling import Compiling
from authz.config.introspection import _read_secret
from authz.config.source import Path
from authz.identity.jwt import JwtIssuer, JwtSource, TokenLocation
from authz.login import cookies
from authz.login.cipher import Cipher, parse_keys
from authz.login.discovery import discovery_for
from authz.login.flow import Login
from authz.login.session import SessionSource
from authz.outside.calls import CallSettings, endpoint_calls

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from authz.identity.credential import Credential

    T = TypeVar("T")

_COOKIE_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


class LoginCompiling(Compiling, Protocol):
    compiled_issuers: list[JwtIssuer]
    fold_case: bool

    def resolve(self, name: str) -> str: ...
    def location(self, where: schema.TokenLocationSpec, path: Path) -> TokenLocation | None: ...
    def key_file(self, name: str, path: Path, parse: Callable[[bytes], Any]) -> Any: ...


def login_section(compiler: LoginCompiling, model: schema.PolicySpec, before: list[Credential]) -> list[Credential]:
    """A session source per issuer with ``login:``."""
    sources: list[Credential] = []
    seen_paths: set[str] = set()
    seen_cookies: set[str] = set()
    for index, config in enumerate(model.issuers):
        if config.login is None:
            continue
        path: Path = ("issuers", index, "login")
        built = _login(compiler, config, config.login, path)
        if built is None:
            continue
        for where, value in (("callback_path", built.callback_path), ("logout_path", built.logout_path)):
            if value in seen_paths:
                compiler.problem((*path, where), f"{value!r} is another login's path")
            seen_paths.add(value)
        if seen_cookies.intersection(built.cookies):
            compiler.problem((*path, "session", "cookie"), f"cookie {config.login.session.cookie!r} is another "
                             "login's (or one of its state, ID token or refresh token cookies)")
        seen_cookies.update(built.cookies)
        sources.append(SessionSource(built))
    return sources


def _login(compiler: LoginCompiling, config: schema.IssuerSpec, spec: schema.LoginSpec, path: Path) -> Login | None:
    ok = True
    if config.introspection is not None or config.jwks_file is not None:
        compiler.problem(path, "login needs the issuer's discovery document and remote key set (no jwks_file, "
                         "no introspection)")
        ok = False
    if not spec.client_id:
        compiler.problem((*path, "client_id"), "empty client_id")
        ok = False
    if "openid" not in spec.scopes:
        compiler.problem((*path, "scopes"), "the scopes must include openid (sign-in needs an ID token)")
        ok = False
    for i, scope in enumerate(spec.scopes):
        if not scope or any(c in scope for c in ' "\\') or not scope.isprintable():
            compiler.problem((*path, "scopes", i), f"invalid scope {scope!r}")
            ok = False
    for field in ("callback_path", "logout_path"):
        value = getattr(spec, field)
        if not _PATH.fullmatch(value) or "//" in value or "/./" in value or "/../" in value:
            compiler.problem((*path, field), f"{field} must be a plain absolute path, not {value!r}")
            ok = False
    if spec.callback_path == spec.logout_path:
        compiler.problem((*path, "logout_path"), "logout_path is the callback_path")
        ok = False
    paths = None
    if spec.paths is not None:
        try:
            paths = matchers.compile_paths(spec.paths, fold_case=compiler.fold_case)
        except ValueError as exc:
            compiler.problem((*path, "paths"), str(exc))
            ok = False
        if paths is not None:
            callback = spec.callback_path.lower() if compiler.fold_case else spec.callback_path
            if paths.matches(callback):
                compiler.problem((*path, "callback_path"), "callback_path is inside paths: a browser sent back "
                                 "to it must never be sent to sign in")
                ok = False
    session = spec.session
    if not _COOKIE_NAME.fullmatch(session.cookie):
        compiler.problem((*path, "session", "cookie"), f"invalid cookie name {session.cookie!r}")
        ok = False
    refresh_before = None
    if session.refresh:
        refresh_before = session.ttl / 4 if session.refresh_before is None else session.refresh_before
        if refresh_before >= session.ttl:
            compiler.problem((*path, "session", "refresh_before"), f"refresh_before ({refresh_before:g}s) must be "
                             f"shorter than the session's ttl ({session.ttl:g}s)")
            ok = False
    elif session.refresh_before is not None:
        compiler.problem((*path, "session", "refresh_before"), "refresh_before without refresh: true")
        ok = False
    keys = compiler.key_file(session.keys_file, (*path, "session", "keys_file"), parse_keys)
    secret = None
    if spec.client_secret_file is not None:
        secret = _read_secret(compiler, spec.client_secret_file, (*path, "client_secret_file"))
        ok = ok and secret is not None
    issuer = next((i for i in compiler.compiled_issuers if i.name == config.name), None)
    if not ok or keys is None or issuer is None:
        return None
    verifying = dataclasses.replace(issuer, audiences=frozenset({spec.client_id}), token_types=None, locations=())
    settings = config.jwks.settings()
    calls = endpoint_calls(config.name, "login", CallSettings(timeout=spec.timeout, max_entries=1000,
                                                              max_bytes=2**20),
                           (config.issuer, spec.client_id, spec.callback_path))
    return Login(
        issuer=verifying, client_id=spec.client_id, client_secret=secret, scopes=tuple(spec.scopes),
        callback_path=spec.callback_path, logout_path=spec.logout_path, paths=paths, ttl=session.ttl,
        cookie=cookies.PREFIX + session.cookie, state_cookie=cookies.PREFIX + session.cookie + "_login",
        id_cookie=cookies.PREFIX + session.cookie + "_id", refresh_cookie=cookies.PREFIX + session.cookie + "_refresh",
        cipher=Cipher(keys), discovery=discovery_for(config.name, config.issuer, settings), calls=calls,
        verifier=JwtSource(TokenLocation(header="x-authz-id-token"), [verifying]), refresh_before=refresh_before,
    )
