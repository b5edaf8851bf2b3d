"""``post_form``: a bounded form POST answering JSON, as token and
introspection endpoints are called (docs/security.md D)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest

from authz.outside.http import FetchError, post_form
from testkit.procs import free_port

ANSWERS: dict[str, tuple[int, str, bytes]] = {
    "/json": (200, "application/json", b'{"active": true}'),
    "/bad-request": (400, "application/json", b'{"error": "invalid_client"}'),
    "/html-error": (500, "text/html", b"<html>oops</html>"),
    "/html": (200, "text/html", b"<html>login</html>"),
    "/huge": (200, "application/json", b'{"a": "' + b"x" * 5000 + b'"}'),
    "/nan": (200, "application/json", b'{"a": NaN}'),
}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            seen.append({"path": self.path, "form": parse_qs(self.rfile.read(length).decode()),
                         "content-type": self.headers.get("content-type"),
                         "authorization": self.headers.get("authorization")})
            if self.path == "/moved":
                self.send_response(307)
                self.send_header("location", "/json")
                self.send_header("content-length", "0")
                self.end_headers()
                return
            status, kind, body = ANSWERS[self.path]
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def post(url: str, **kwargs: Any) -> tuple[int, Any]:
    async def run() -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session:
            return await post_form(session, url, {"token": "abc", "x": "a b&c"}, max_bytes=1024, **kwargs)
    return asyncio.run(run())


def test_the_form_is_sent_encoded_and_the_json_answer_read(server: tuple[str, list[dict[str, Any]]]) -> None:
    base, seen = server
    assert post(base + "/json", headers={"authorization": "Basic eDp5"}) == (200, {"active": True})
    assert seen[-1]["form"] == {"token": ["abc"], "x": ["a b&c"]}
    assert seen[-1]["content-type"] == "application/x-www-form-urlencoded"
    assert seen[-1]["authorization"] == "Basic eDp5"


def test_an_error_status_is_returned_for_the_caller_to_judge(server: tuple[str, list[dict[str, Any]]]) -> None:
    base, _ = server
    assert post(base + "/bad-request") == (400, {"error": "invalid_client"})
    assert post(base + "/html-error") == (500, None)


@pytest.mark.parametrize(("path", "why"), [
    ("/html", "not JSON"), ("/nan", "not JSON"), ("/huge", "larger than 1024 bytes"),
])
def test_an_unusable_success_raises(server: tuple[str, list[dict[str, Any]]], path: str, why: str) -> None:
    base, _ = server
    with pytest.raises(FetchError, match=why):
        post(base + path)


def test_a_redirect_is_not_followed_so_the_form_goes_nowhere_else(
        server: tuple[str, list[dict[str, Any]]]) -> None:
    base, seen = server
    before = len(seen)
    assert post(base + "/moved") == (307, None)
    assert [entry["path"] for entry in seen[before:]] == ["/moved"]


def test_a_refused_connection_is_a_fetch_error() -> None:
    with pytest.raises(FetchError, match="POST"):
        post(f"http://127.0.0.1:{free_port()}/token")  # nothing listens there
