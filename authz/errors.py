"""Reason codes, the one table from reason to wire outcome, and the exception tree.

Exception hierarchy::

    AuthzError
    ├── ConfigError            a policy that cannot be loaded (carries every Problem)
    ├── CredentialError        a presented credential that does not verify (always 401)
    │   ├── InvalidToken       malformed, bad signature, bad claims        -> invalid_token
    │   ├── ExpiredToken       exp <= now - leeway                          -> expired_token
    │   ├── UnknownIssuer      no configured issuer has the token's iss     -> unknown_issuer
    │   ├── KeysUnavailable    the issuer's key set could not be obtained   -> jwks_unavailable
    │   ├── InvalidApiKey      no configured key has this value             -> invalid_api_key
    │   ├── CertificateError   a client certificate that does not verify    -> *_certificate (below)
    │   ├── InactiveToken      introspection says the token is not active   -> inactive_token
    │   ├── IntrospectionUnavailable  no introspection answer in time       -> introspection_unavailable
    │   ├── InvalidSession     a session cookie that does not open          -> invalid_session
    │   └── ExpiredSession     a session cookie past its lifetime           -> expired_session
    └── InvalidPath            encoded '/' or '\\', NUL, not origin-form     -> invalid_path

A denial is a value (:class:`authz.decision.Decision`), not an exception: these
exceptions only carry a failure from the place it is found to the engine, which
turns each into a denial.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Reason(enum.StrEnum):
    """Stable reason codes; also metric label values (docs/policy.md, "Reason codes")."""

    ALLOWED = "allowed"
    MISSING_CREDENTIAL = "missing_credential"
    INVALID_TOKEN = "invalid_token"
    EXPIRED_TOKEN = "expired_token"
    UNKNOWN_ISSUER = "unknown_issuer"
    JWKS_UNAVAILABLE = "jwks_unavailable"
    INVALID_API_KEY = "invalid_api_key"
    #: The credential's own exp has passed (it was accepted only thanks to the
    #: leeway) and the policy asserts the caller in an identity token: a token
    #: never outlives its credential, so none is made and the request is denied.
    CREDENTIAL_IN_LEEWAY = "credential_in_leeway"
    DENIED_BY_RULE = "denied_by_rule"
    NO_PERMISSION = "no_permission"
    INVALID_PATH = "invalid_path"
    INVALID_REQUEST = "invalid_request"
    #: The client's headers with those the policy adds would pass Envoy's
    #: limits on one request (100 headers, 60 KiB): denied rather than make
    #: a request Envoy or the upstream would refuse or cut.
    REQUEST_HEADERS_TOO_LARGE = "request_headers_too_large"
    INTERNAL_ERROR = "internal_error"
    UNTRUSTED_CALLER = "untrusted_caller"
    # Client certificates (authz/identity/certificate.py, docs/security.md 75-79).
    #: Not a certificate, or not one: unparsable, two where one is expected,
    #: not for client authentication, no subject of the kind the policy names.
    INVALID_CERTIFICATE = "invalid_certificate"
    #: Outside its validity period at ``now``.
    EXPIRED_CERTIFICATE = "expired_certificate"
    #: Does not chain to the policy's CA bundle, or is not one the policy pins.
    UNTRUSTED_CERTIFICATE = "untrusted_certificate"
    #: A certificate header no hop authz trusts may set (``serve --trust-xfcc``,
    #: ``--trust-client-cert``).
    UNTRUSTED_CERTIFICATE_HEADER = "untrusted_certificate_header"
    #: Introspection (RFC 7662) answered ``active: false``: revoked, expired
    #: at the issuer, or a token it never issued.
    INACTIVE_TOKEN = "inactive_token"
    #: The introspection endpoint gave no usable answer within its timeout
    #: (down, slow, an error, garbage) for a token not known active before.
    INTROSPECTION_UNAVAILABLE = "introspection_unavailable"
    #: A data source the rules read (``data:``) gave no usable answer
    #: within its timeout and has no fallback value (``on_error: deny``).
    DATA_UNAVAILABLE = "data_unavailable"
    # A request body a rule reads that cannot be read as it asks (authz.body):
    BODY_TOO_LARGE = "body_too_large"  # over body.max_bytes, or cut by the proxy
    BODY_UNAVAILABLE = "body_unavailable"  # declared, but not passed on whole by the proxy
    BODY_ENCODING = "body_encoding"  # compressed (content-encoding): never guessed at
    BODY_CONTENT_TYPE = "body_content_type"  # body_json or form read on a body of another media type
    BODY_INVALID = "body_invalid"  # not JSON, not a form, not UTF-8
    BODY_DUPLICATE_KEY = "body_duplicate_key"  # a JSON key or form field twice
    BODY_TOO_COMPLEX = "body_too_complex"  # deeper or more values than body.max_depth / max_elements
    # Browser sign-in (authz/login, docs/security.md K).
    #: A session cookie that does not open: tampered, cut, another cookie's,
    #: or sealed with a key no longer in the keys file.
    INVALID_SESSION = "invalid_session"
    #: A session cookie past its lifetime (``session.ttl``).
    EXPIRED_SESSION = "expired_session"
    #: The callback signed the browser in: a 302 to where it was going, with the session cookie.
    SIGNED_IN = "signed_in"
    #: The logout path cleared the session: a 302 to the provider's end-session endpoint, or to /.
    SIGNED_OUT = "signed_out"
    #: A callback without the login-state cookie, or whose ``state`` is not the cookie's (foreign).
    LOGIN_STATE_INVALID = "login_state_invalid"
    #: A callback whose state was used before (this worker saw it complete).
    LOGIN_STATE_REUSED = "login_state_reused"
    #: The ID token's nonce is not the one the sign-in sent.
    LOGIN_NONCE_MISMATCH = "login_nonce_mismatch"
    #: The ID token does not verify: another issuer, audience or key, expired, or azp not the client.
    LOGIN_ID_TOKEN_INVALID = "login_id_token_invalid"
    #: The return URL is not a same-origin path (an open redirect).
    LOGIN_RETURN_INVALID = "login_return_invalid"
    #: The provider answered the callback with an error, or refused the code: shown once, never a redirect.
    LOGIN_PROVIDER_ERROR = "login_provider_error"
    #: The token endpoint gave no usable answer within its timeout.
    LOGIN_UNAVAILABLE = "login_unavailable"
    #: A logout that is not a same-origin POST (CSRF).
    LOGOUT_REFUSED = "logout_refused"


# gRPC status codes used in CheckResponse.status (google.rpc.Code values).
GRPC_OK = 0
GRPC_INVALID_ARGUMENT = 3
GRPC_PERMISSION_DENIED = 7
GRPC_UNAUTHENTICATED = 16


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the wire says for one reason, through either door."""

    grpc_code: int
    http_status: int
    error: str | None  # the "error" member of the denied JSON body
    challenge: str | None = None  # the www-authenticate header (RFC 6750) of a 401


def _unauthenticated(reason: Reason) -> Outcome:
    """A 401 with its challenge: a bare one when no credential was presented,
    ``error="invalid_token"`` naming the reason when one was and failed."""
    challenge = 'Bearer realm="authz"'
    if reason is not Reason.MISSING_CREDENTIAL:
        challenge += f', error="invalid_token", error_description="{reason.value}"'
    return Outcome(GRPC_UNAUTHENTICATED, 401, "unauthenticated", challenge)


_FORBIDDEN = Outcome(GRPC_PERMISSION_DENIED, 403, "forbidden")

#: The one table from reason to wire outcome. ``no_permission`` is 403 for an
#: authenticated caller; the engine uses ``missing_credential`` (401) for an
#: anonymous one (docs/policy.md, "Evaluation").
OUTCOMES: dict[Reason, Outcome] = {
    Reason.ALLOWED: Outcome(GRPC_OK, 200, None),
    Reason.MISSING_CREDENTIAL: _unauthenticated(Reason.MISSING_CREDENTIAL),
    Reason.INVALID_TOKEN: _unauthenticated(Reason.INVALID_TOKEN),
    Reason.EXPIRED_TOKEN: _unauthenticated(Reason.EXPIRED_TOKEN),
    Reason.UNKNOWN_ISSUER: _unauthenticated(Reason.UNKNOWN_ISSUER),
    Reason.JWKS_UNAVAILABLE: _unauthenticated(Reason.JWKS_UNAVAILABLE),
    Reason.INVALID_API_KEY: _unauthenticated(Reason.INVALID_API_KEY),
    Reason.CREDENTIAL_IN_LEEWAY: _unauthenticated(Reason.CREDENTIAL_IN_LEEWAY),
    Reason.DENIED_BY_RULE: _FORBIDDEN,
    Reason.NO_PERMISSION: _FORBIDDEN,
    Reason.INVALID_PATH: _FORBIDDEN,
    Reason.INVALID_REQUEST: _FORBIDDEN,
    Reason.REQUEST_HEADERS_TOO_LARGE: _FORBIDDEN,
    Reason.INTERNAL_ERROR: _FORBIDDEN,
    # The caller of Check (not the client) is not admitted by ``callers:``.
    Reason.UNTRUSTED_CALLER: _FORBIDDEN,
    Reason.INVALID_CERTIFICATE: _unauthenticated(Reason.INVALID_CERTIFICATE),
    Reason.EXPIRED_CERTIFICATE: _unauthenticated(Reason.EXPIRED_CERTIFICATE),
    Reason.UNTRUSTED_CERTIFICATE: _unauthenticated(Reason.UNTRUSTED_CERTIFICATE),
    Reason.UNTRUSTED_CERTIFICATE_HEADER: _unauthenticated(Reason.UNTRUSTED_CERTIFICATE_HEADER),
    Reason.INACTIVE_TOKEN: _unauthenticated(Reason.INACTIVE_TOKEN),
    Reason.INTROSPECTION_UNAVAILABLE: _unauthenticated(Reason.INTROSPECTION_UNAVAILABLE),
    Reason.DATA_UNAVAILABLE: _FORBIDDEN,
    # A body a rule must read and cannot: the client's request is at fault
    # (400/413/415, as a web server answers), except a body the proxy did not
    # pass on whole, which is the deployment's (403).
    Reason.BODY_TOO_LARGE: Outcome(GRPC_INVALID_ARGUMENT, 413, "payload_too_large"),
    Reason.BODY_UNAVAILABLE: _FORBIDDEN,
    Reason.BODY_ENCODING: Outcome(GRPC_INVALID_ARGUMENT, 415, "unsupported_media_type"),
    Reason.BODY_CONTENT_TYPE: Outcome(GRPC_INVALID_ARGUMENT, 415, "unsupported_media_type"),
    Reason.BODY_INVALID: Outcome(GRPC_INVALID_ARGUMENT, 400, "bad_request"),
    Reason.BODY_DUPLICATE_KEY: Outcome(GRPC_INVALID_ARGUMENT, 400, "bad_request"),
    Reason.BODY_TOO_COMPLEX: Outcome(GRPC_INVALID_ARGUMENT, 400, "bad_request"),
    Reason.INVALID_SESSION: _unauthenticated(Reason.INVALID_SESSION),
    Reason.EXPIRED_SESSION: _unauthenticated(Reason.EXPIRED_SESSION),
    # The flow's own replies: always a redirect the login step makes (authz.login).
    Reason.SIGNED_IN: Outcome(GRPC_UNAUTHENTICATED, 302, "unauthenticated"),
    Reason.SIGNED_OUT: Outcome(GRPC_UNAUTHENTICATED, 302, "unauthenticated"),
    Reason.LOGIN_STATE_INVALID: _FORBIDDEN,
    Reason.LOGIN_STATE_REUSED: _FORBIDDEN,
    Reason.LOGIN_NONCE_MISMATCH: _FORBIDDEN,
    Reason.LOGIN_ID_TOKEN_INVALID: _FORBIDDEN,
    Reason.LOGIN_RETURN_INVALID: _FORBIDDEN,
    Reason.LOGIN_PROVIDER_ERROR: _FORBIDDEN,
    Reason.LOGIN_UNAVAILABLE: _FORBIDDEN,
    Reason.LOGOUT_REFUSED: _FORBIDDEN,
}


class AuthzError(Exception):
    """Base of every error authz raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem in a config file, reported as ``FILE:LINE: message``."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class ConfigError(AuthzError):
    """A policy that cannot be loaded. ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


class CredentialError(AuthzError):
    """A credential was presented and did not verify: always a 401.

    ``detail`` is for logs and ``authz explain``; it never contains the
    credential itself.
    """

    reason: Reason = Reason.INVALID_TOKEN

    def __init__(self, detail: str, *, retry: Any = None) -> None:
        self.detail = detail
        #: A ``concurrent.futures.Future`` of a key-set fetch under way whose
        #: result could change the answer (the engine may wait on it), or None.
        self.retry = retry
        super().__init__(detail)


class InvalidToken(CredentialError):
    reason = Reason.INVALID_TOKEN


class ExpiredToken(CredentialError):
    reason = Reason.EXPIRED_TOKEN


class UnknownIssuer(CredentialError):
    reason = Reason.UNKNOWN_ISSUER


class KeysUnavailable(CredentialError):
    reason = Reason.JWKS_UNAVAILABLE


class InvalidApiKey(CredentialError):
    reason = Reason.INVALID_API_KEY


class CertificateError(CredentialError):
    """A client certificate that does not verify; ``reason`` says why."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
class InactiveToken(CredentialError):
    reason = Reason.INACTIVE_TOKEN


class IntrospectionUnavailable(CredentialError):
    reason = Reason.INTROSPECTION_UNAVAILABLE


class InvalidSession(CredentialError):
    reason = Reason.INVALID_SESSION


class ExpiredSession(CredentialError):
    reason = Reason.EXPIRED_SESSION


class InvalidPath(AuthzError):
    """The request path cannot be matched safely."""

    reason = Reason.INVALID_PATH
