"""Outside data in conditions: the policy's ``data:`` sources, which CEL
reads as ``data.NAME`` (docs/policy.md, "Outside data"; docs/security.md 84-86).

Each source is one endpoint (:class:`authz.outside.calls.KeyedCalls`). Its
URL is a template whose ``{...}`` fields are CEL expressions giving
strings, each percent-encoded whole (a value never adds a path segment, a
query parameter or a host); its origin (scheme, host, port) is fixed text,
checked when the policy loads. Its optional JSON body maps names to CEL
expressions. The answer is parsed JSON, cached by the exact call (method,
URL, body) for ``cache_ttl``.

Before the deny rules, the engine asks :meth:`DataPlan.fetch` for the
sources read by the ``when`` of the rules and permissions that may apply to
this request (their other fields match; a permission's role is the
caller's): each at most once per Check, all at once. While any call is under
way the Check waits for all of them (:class:`authz.engine.CallPending`); a
source that fails or answers garbage within its timeout denies
(``data_unavailable``) or yields its ``on_error`` value.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from authz.cel import EvaluationError, Expression
from authz.outside.calls import Answer, CallFailed, CallWaiting, KeyedCalls, all_of
from authz.outside.http import FetchError

if TYPE_CHECKING:
    import aiohttp

    from authz.request import View

#: The largest answer a source may give.
MAX_ANSWER_BYTES = 256 * 1024
#: ``on_error: deny``.
DENY = object()


@dataclass(frozen=True, slots=True, eq=False)
class DataSource:
    name: str
    method: str
    #: The URL: fixed text and fields (an expression giving a string), in order.
    url: tuple[str | Expression, ...]
    headers: tuple[tuple[str, str], ...]
    body: tuple[tuple[str, Expression], ...] | None
    cache_ttl: float
    on_error: Any  # DENY, or the value data.NAME holds when the source fails
    calls: KeyedCalls[Any]

    def build(self, view: View) -> tuple[str, bytes | None]:
        """The exact call for this request: (URL, body). Raises
        EvaluationError when a field cannot be computed."""
        parts = []
        for part in self.url:
            if isinstance(part, str):
                parts.append(part)
                continue
            value = part.evaluate(view.variables(part.roots))
            if not isinstance(value, str):
                raise EvaluationError(f"a URL field of data source {self.name!r} did not give a string")
            parts.append(quote(value, safe=""))
        body = None
        if self.body is not None:
            document = {name: expr.evaluate(view.variables(expr.roots)) for name, expr in self.body}
            body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        return "".join(parts), body

    def key(self, url: str, body: bytes | None) -> bytes:
        digest = hashlib.sha256(f"{self.method}\0{url}\0".encode())
        digest.update(body or b"")
        return digest.digest()

    async def call(self, session: aiohttp.ClientSession, url: str, body: bytes | None,
                   trace: Mapping[str, str]) -> Answer[Any]:
        headers = {**dict(self.headers), **trace}
        if body is not None:
            headers["content-type"] = "application/json"
        async with session.request(self.method, url, data=body, headers=headers, allow_redirects=False) as response:
            if response.status != 200:
                raise FetchError(f"answered HTTP {response.status}")
            if response.content_length is not None and response.content_length > MAX_ANSWER_BYTES:
                raise FetchError(f"answer larger than {MAX_ANSWER_BYTES} bytes")
            read = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                read += chunk
                if len(read) > MAX_ANSWER_BYTES:
                    raise FetchError(f"answer larger than {MAX_ANSWER_BYTES} bytes")
        try:
            value = json.loads(bytes(read), parse_constant=_no_constant)
        except (ValueError, RecursionError):
            raise FetchError("answer is not JSON") from None
        return Answer(value, self.cache_ttl, 0.0, len(read))


def _no_constant(name: str) -> Any:
    raise ValueError(name)


@dataclass(frozen=True, slots=True)
class Reader:
    """A rule or permission whose ``when`` reads data sources: its matcher
    without the ``when`` (does it apply?), and the sources."""

    static: Any  # authz.policy.Matcher (not imported: the policy module names this one)
    role: str | None  # a permission's role; None for a rule
    sources: frozenset[str]


@dataclass(frozen=True, slots=True)
class Fetched:
    values: dict[str, Any]
    until: float | None  # the earliest wall-clock end of the answers' cache_ttl
    failed: str | None = None  # why the Check is denied (an on_error: deny source failed)


class DataPlan:
    """The policy's data sources and who reads them."""

    def __init__(self, sources: Mapping[str, DataSource], readers: Iterable[Reader]) -> None:
        self.sources = dict(sources)
        self.readers = tuple(readers)

    def needed(self, view: View) -> list[DataSource]:
        names: set[str] = set()
        roles = view.identity.roles
        for reader in self.readers:
            if reader.sources <= names or (reader.role is not None and reader.role not in roles):
                continue
            if reader.static.matches(view, fail_closed=True)[0]:
                names |= reader.sources
        return [self.sources[name] for name in sorted(names)]

    def fetch(self, view: View, now: float, *, may_wait: bool) -> Fetched | concurrent.futures.Future[Any]:
        """What ``data`` holds for this Check, or (``may_wait`` only) a
        future that completes once every call under way has."""
        values: dict[str, Any] = {}
        waiting: list[concurrent.futures.Future[Any]] = []
        until: float | None = None
        headers = view.request.headers
        for source in self.needed(view):
            try:
                url, body = source.build(view)
            except EvaluationError as exc:
                problem = f"data source {source.name}: {exc}"
            else:
                try:
                    values[source.name] = source.calls.get(
                        source.key(url, body), functools.partial(_call, source, url, body), headers)
                    until = source.cache_ttl + now if until is None else min(until, now + source.cache_ttl)
                    continue
                except CallWaiting as pending:
                    if may_wait:
                        waiting.append(pending.future)
                        continue
                    problem = f"data source {source.name}: no answer within its timeout"
                except CallFailed as exc:
                    problem = f"data source {source.name}: {exc}"
            if source.on_error is DENY:
                return Fetched(values, until, problem)
            else:
                values[source.name] = source.on_error
        if waiting:
            return all_of(waiting)
        return Fetched(values, until)


async def _call(source: DataSource, url: str, body: bytes | None, session: aiohttp.ClientSession,
                trace: Mapping[str, str]) -> Answer[Any]:
    return await source.call(session, url, body, trace)
