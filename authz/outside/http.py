"""Calls to the outside over HTTP: fetching the documents of remote key sets
(JWKS and OIDC discovery) and posting forms to an endpoint (a token or an
introspection endpoint): which URLs may be called, which redirects followed,
how much is read (docs/security.md D)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

if TYPE_CHECKING:
    import aiohttp

MAX_DOCUMENT_BYTES = 1024 * 1024


class FetchError(Exception):
    """A key set or discovery document could not be fetched or used."""


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str | None:
    """Why a key or issuer URL is unacceptable, or None: https, or plain http
    to a loopback address only."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and is_loopback_url(url):
        return None
    return "must be an https URL (plain http only to a loopback address)"


#: Redirects a key-set or discovery fetch follows.
MAX_REDIRECTS = 3


def redirect_target(current: str, location: str) -> str:
    """Where a redirect from ``current`` to ``location`` leads, when a key
    fetch may follow it: to a URL :func:`check_url` accepts, and never from
    https to plain http. Raises :class:`FetchError` otherwise, before any
    request is sent there."""
    target = urljoin(current, location)
    problem = check_url(target)
    if problem is not None:
        raise FetchError(f"redirect from {current} to {target}: {problem}")
    if urlsplit(current).scheme == "https" and urlsplit(target).scheme != "https":
        raise FetchError(f"redirect from {current} to {target} leaves https")
    return target


async def fetch_json(session: aiohttp.ClientSession, url: str, max_bytes: int) -> Any:
    """GET a JSON document of at most ``max_bytes`` (no time bound here: the
    caller bounds the whole fetch), following at most :data:`MAX_REDIRECTS`
    redirects that :func:`redirect_target` allows."""
    for _ in range(MAX_REDIRECTS + 1):
        async with session.get(url, allow_redirects=False) as response:
            if response.status in (301, 302, 303, 307, 308):
                url = redirect_target(url, response.headers.get("location", ""))
                continue
            return await _read_json(response, url, max_bytes)
    raise FetchError(f"more than {MAX_REDIRECTS} redirects fetching {url}")


async def _read_json(response: aiohttp.ClientResponse, url: str, max_bytes: int) -> Any:
    if response.status != 200:
        raise FetchError(f"HTTP {response.status} from {url}")
    body = await _read_bounded(response, url, max_bytes)
    try:
        return _parse(body)
    except (ValueError, RecursionError):
        raise FetchError(f"document from {url} is not JSON") from None


async def post_form(session: aiohttp.ClientSession, url: str, form: Mapping[str, str], *, max_bytes: int,
                    headers: Mapping[str, str] | None = None, json_answer: bool = True) -> tuple[int, Any]:
    """POST ``form`` as ``application/x-www-form-urlencoded`` to ``url`` (no
    redirect followed: a token or introspection endpoint that moves is a
    configuration error, and following one would resend the form elsewhere),
    and read a JSON answer of at most ``max_bytes``. Returns the status with
    the parsed answer, so the caller says what a 400 or 401 from the
    endpoint means; an answer that is not JSON is None unless the status is
    200, where it raises :class:`FetchError` (unless ``json_answer`` is
    False: an endpoint whose success has no body), as transport errors and
    oversize answers do. No time bound here: the caller bounds the call."""
    import aiohttp

    sent = {"accept": "application/json", **(headers or {})}
    try:
        async with session.post(url, data=dict(form), headers=sent, allow_redirects=False) as response:
            body = await _read_bounded(response, url, max_bytes)
            status = response.status
    except aiohttp.ClientError as exc:
        raise FetchError(f"POST {url}: {exc.__class__.__name__}: {exc}") from None
    try:
        return status, _parse(body)
    except (ValueError, RecursionError):
        if status == 200 and json_answer:
            raise FetchError(f"answer from {url} is not JSON") from None
        return status, None


async def _read_bounded(response: aiohttp.ClientResponse, url: str, max_bytes: int) -> bytes:
    if response.content_length is not None and response.content_length > max_bytes:
        raise FetchError(f"document from {url} larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in response.content.iter_chunked(65536):
        body += chunk
        if len(body) > max_bytes:
            raise FetchError(f"document from {url} larger than {max_bytes} bytes")
    return bytes(body)


def _parse(body: bytes) -> Any:
    return json.loads(body, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(name)
