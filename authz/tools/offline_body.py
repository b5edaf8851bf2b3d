"""A request body for ``authz check`` and ``authz explain``: ``--body FILE|-``
(bytes, with ``--content-type``) or ``--body-json TEXT``, put into the
CheckRequest as Envoy passes one on (``raw_body``, and the
``x-envoy-auth-partial-body: false`` mark Envoy sets on a whole body), so
offline checks exercise the rules that read ``request.body``,
``body_json`` and ``form``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from authz.body import PARTIAL_BODY

#: ``authz check``'s exit status for a usage error (authz.cli.EXIT_USAGE).
_USAGE = 2


def add_body_arguments(command: argparse.ArgumentParser) -> None:
    body = command.add_mutually_exclusive_group()
    body.add_argument("--body", default=None, metavar="FILE|-",
                      help="the request body, as Envoy passes it on with_request_body ('-' for stdin)")
    body.add_argument("--body-json", default=None, metavar="JSON",
                      help="the request body as JSON text (content-type application/json unless --content-type)")
    command.add_argument("--content-type", default=None, metavar="TYPE",
                         help="the body's content-type header (default: the request's, or application/json "
                              "with --body-json)")


def apply_body(args: argparse.Namespace, check: Any) -> Any:
    """``check`` with the body the arguments name (unchanged without one);
    a body that cannot be read ends the command (exit 2), naming it."""
    if args.body is None and args.body_json is None:
        return check
    if args.body_json is not None:
        try:
            json.loads(args.body_json)
        except ValueError as exc:
            _usage(f"--body-json: not JSON: {exc}")
        body, default_type = args.body_json.encode("utf-8"), "application/json"
    else:
        if args.body == "-" and args.request == "-":
            _usage("--body - and --request - cannot both read stdin")
        try:
            body = sys.stdin.buffer.read() if args.body == "-" else _read(args.body)
        except OSError as exc:
            _usage(f"{args.body}: cannot read: {exc.strerror}")
        default_type = None
    http = check.attributes.request.http
    http.raw_body = body
    if http.header_map.headers and not http.headers:  # headers as raw bytes: added there
        named = {entry.key: entry for entry in http.header_map.headers}
        content_type = args.content_type or (None if "content-type" in named else default_type)
        for key, value in ((PARTIAL_BODY, "false"), ("content-type", content_type)):
            if value:
                entry = named[key] if key in named else http.header_map.headers.add(key=key)
                entry.raw_value, entry.value = value.encode("utf-8"), ""
        return check
    http.headers[PARTIAL_BODY] = "false"
    content_type = args.content_type or http.headers.get("content-type") or default_type
    if content_type:
        http.headers["content-type"] = content_type
    return check


def _read(name: str) -> bytes:
    with open(name, "rb") as handle:
        return handle.read()


def _usage(message: str) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(_USAGE)
