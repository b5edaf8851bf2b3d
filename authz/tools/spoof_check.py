"""``authz validate --config POLICY --envoy-config FILE``: where a config
someone wrote by hand lets a client's copy of a header the policy owns reach
the upstream. One ``FILE:LINE: warning`` per header and place.

FILE is an Envoy bootstrap, an Emissary ``AuthService`` or an Istio mesh
config (bare, an ``IstioOperator``'s ``spec.meshConfig``, istiod Helm values'
``meshConfig``, or the ``istio`` ConfigMap's ``data.mesh``); a file may hold
several YAML documents. What is checked:

- HTTP door (Envoy ``http_service``, Istio ``envoyExtAuthzHttp``, Emissary
  ``proto: http``): each header the policy sets must be in the list of what
  Envoy copies from authz's 200 (``allowed_upstream_headers``,
  ``headersToUpstreamOnAllow``, ``allowed_authorization_headers``): a header
  left out is dropped from authz's answer, and the client's copy is not
  replaced. (authz removes what it owns but does not set; it cannot remove
  what it sets, since Envoy applies removals after the headers it sets.)
- Envoy routes with ext_authz ``disabled`` and Emissary Mappings with
  ``bypass_auth``: no Check runs, so the route must strip
  (``request_headers_to_remove``, ``remove_request_headers``) every header
  the policy owns.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from authz.config.source import Located, Path, load_yaml
from authz.tools.mesh_config import EMISSARY_DEFAULT_AUTHORIZATION_HEADERS
from authz.tools.policy_headers import PolicyHeaders

_DOCUMENT = re.compile(r"^---\s*$", re.MULTILINE)


def _get(node: Any, *names: str) -> Any:
    """A field by its proto3 JSON or its proto name (``allowedUpstreamHeaders``
    or ``allowed_upstream_headers``)."""
    if not isinstance(node, dict):
        return None
    for name in names:
        for spelling in (name, re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)):
            if spelling in node:
                return node[spelling]
    return None


def _spec(data: dict[str, Any]) -> dict[str, Any]:
    spec = data.get("spec")
    return spec if isinstance(spec, dict) else {}


def _walk(node: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*path, index))


def _envoy_matches(patterns: Any, name: str) -> bool:
    """Whether an Envoy ``ListStringMatcher``'s patterns match ``name``."""
    for pattern in patterns if isinstance(patterns, list) else ():
        if not isinstance(pattern, dict):
            continue
        fold = bool(_get(pattern, "ignore_case"))
        value = name.lower() if fold else name
        texts = {key: (found.lower() if fold else found) for key in ("exact", "prefix", "suffix", "contains")
                 if isinstance(found := pattern.get(key), str)}
        regex = _get(pattern, "safe_regex")
        regex_text = regex.get("regex") if isinstance(regex, dict) else None
        if (texts.get("exact") == value or value.startswith(texts.get("prefix", "\0"))
                or value.endswith(texts.get("suffix", "\0")) or texts.get("contains", "\0") in value
                or (isinstance(regex_text, str) and re.fullmatch(regex_text, name) is not None)):
            return True
    return False


def _istio_matches(names: Any, name: str) -> bool:
    """Istio's header lists: exact names, ``prefix*``, ``*suffix`` or ``*``."""
    for item in names if isinstance(names, list) else ():
        if not isinstance(item, str):
            continue
        item = item.lower()
        if item == name or item == "*" or (item.endswith("*") and name.startswith(item[:-1])) \
                or (item.startswith("*") and name.endswith(item[1:])):
            return True
    return False


class _Check:
    def __init__(self, file: str, headers: PolicyHeaders) -> None:
        self.file = file
        self.headers = headers
        self.warnings: list[tuple[int, str]] = []

    def warn(self, line: int, message: str) -> None:
        self.warnings.append((line, f"{self.file}:{line}: warning: {message}"))

    def unset(self, located: Located, path: Path, listed: Any, where: str, matches: Any,
              extra: Sequence[str] = ()) -> None:
        line = located.line(path)
        for name in self.headers.upstream:
            if name not in extra and not matches(listed, name):
                self.warn(line, f"{name!r}, which the policy sets, is not in {where}: Envoy drops authz's value "
                                "and a client-sent copy reaches the upstream")

    def document(self, located: Located) -> None:
        data = located.data
        if isinstance(data, dict) and data.get("kind") == "AuthService":
            self.emissary(located, data)
            return
        if isinstance(data, dict) and data.get("kind") == "Mapping":
            spec = _spec(data)
            if spec.get("bypass_auth") is True:
                self.stripped(located, ("spec", "bypass_auth"), spec.get("remove_request_headers") or [],
                              "remove_request_headers", "this Mapping bypasses the AuthService")
            return
        if isinstance(data, dict) and data.get("kind") == "ConfigMap" and isinstance(_get(data, "data"), dict) \
                and isinstance(data["data"].get("mesh"), str):
            self.config_map(located, data["data"]["mesh"])
            return
        for path, node in _walk(data):
            if not isinstance(node, dict):
                continue
            kind = str(node.get("@type", ""))
            if kind.endswith("ext_authz.v3.ExtAuthz") and _get(node, "http_service") is not None:
                service = _get(node, "http_service")
                response = _get(service, "authorization_response")
                listed = _get(response, "allowed_upstream_headers")
                where: Path = (*path, "httpService" if "httpService" in node else "http_service")
                if response is not None:
                    where = (*where, "authorizationResponse" if "authorizationResponse" in service
                             else "authorization_response")
                self.unset(located, where, _get(listed, "patterns"), "allowed_upstream_headers", _envoy_matches)
            elif kind.endswith("ext_authz.v3.ExtAuthzPerRoute") and node.get("disabled") is True:
                self.unchecked(located, path, data)
            elif "envoyExtAuthzHttp" in node and isinstance(node["envoyExtAuthzHttp"], dict):
                http = node["envoyExtAuthzHttp"]
                self.unset(located, (*path, "envoyExtAuthzHttp"), http.get("headersToUpstreamOnAllow"),
                           "headersToUpstreamOnAllow", _istio_matches)

    def unchecked(self, located: Located, path: Path, data: Any) -> None:
        """A route (or virtual host) that disables ext_authz: it must strip
        every owned header itself."""
        for cut in range(len(path) - 1, 0, -1):
            if path[cut - 1] in ("typedPerFilterConfig", "typed_per_filter_config"):
                holder: Any = data
                for part in path[:cut - 1]:
                    holder = holder[part]
                self.stripped(located, (*path, "disabled"), _get(holder, "request_headers_to_remove") or [],
                              "this route's request_headers_to_remove", "ext_authz is disabled here")
                return

    def stripped(self, located: Located, path: Path, listed: Any, where: str, why: str) -> None:
        """Where no Check runs, every owned header must be stripped."""
        for name in self.headers.owned:
            if name not in listed:
                self.warn(located.line(path), f"{name!r}, which the policy owns, is not in {where}: {why}, "
                                              "so a client-sent copy reaches the upstream")

    def emissary(self, located: Located, data: dict[str, Any]) -> None:
        spec = _spec(data)
        if str(spec.get("proto", "http")) != "http":
            return
        key = "allowed_authorization_headers"
        self.unset(located, ("spec", key) if key in spec else ("spec",), spec.get(key), key,
                   lambda listed, name: name in (listed or ()), EMISSARY_DEFAULT_AUTHORIZATION_HEADERS)

    def config_map(self, located: Located, mesh: str) -> None:
        first = located.blocks.get(("data", "mesh"), located.line(("data", "mesh")) + 1)
        inner = load_yaml("\n" * (first - 1) + mesh, self.file)
        if inner.data is not None:
            self.document(inner)


def spoofable(file: str, text: str, headers: PolicyHeaders) -> list[str]:
    """The warnings for the config ``text`` read from ``file``, by line."""
    check = _Check(file, headers)
    starts = [0, *(match.end() for match in _DOCUMENT.finditer(text))]
    ends = [*(match.start() for match in _DOCUMENT.finditer(text)), len(text)]
    for start, end in zip(starts, ends, strict=True):
        chunk = text[start:end]
        if not chunk.strip() or all(line.lstrip().startswith("#") or not line.strip() for line in chunk.splitlines()):
            continue
        located = load_yaml("\n" * text.count("\n", 0, start) + chunk, file)
        for problem in located.problems:
            check.warn(problem.line, f"cannot check: {problem.message}")
        if located.data is not None:
            check.document(located)
    return [message for _line, message in sorted(check.warnings, key=lambda item: item[0])]
