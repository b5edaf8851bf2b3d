"""Real processes for integration tests and benchmarks: authz, Envoy, small HTTP servers.

Every wait here is on a condition (a line in a process's output, an HTTP
answer), never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authz.tools.envoy_config import EnvoyOptions, render


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_run(count: int) -> int:
    """A base port such that base..base+count-1 are free now."""
    for _ in range(200):
        base = random.randint(20000, 60000 - count)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no run of free ports")


class Proc:
    """A subprocess whose output (stdout and stderr merged) is read by a thread."""

    def __init__(self, args: list[str], *, name: str, env: Mapping[str, str | None] | None = None,
                 cwd: str | Path | None = None) -> None:
        """``env`` is added to this process's environment; a None value unsets the variable."""
        self.name = name
        self.lines: list[str] = []
        self._cond = threading.Condition()
        merged: dict[str, str | None] = {**os.environ, **(env or {})}
        self.popen = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env={key: value for key, value in merged.items() if value is not None}, cwd=cwd,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def wait_for(self, pattern: str, *, since: int = 0, timeout: float = 60.0) -> str:
        """The first line after ``since`` matching ``pattern`` (regex)."""
        regex = re.compile(pattern)
        found: list[str] = []

        def ready() -> bool:
            for line in self.lines[since:]:
                if regex.search(line):
                    found.append(line)
                    return True
            return self.popen.poll() is not None and not self._reader.is_alive()

        with self._cond:
            self._cond.wait_for(ready, timeout)
        if not found:
            raise AssertionError(f"{self.name}: no line matching {pattern!r} within {timeout}s; output:\n"
                                 + self.output(60))
        return found[0]

    def output(self, last: int = 200) -> str:
        with self._cond:
            return "\n".join(self.lines[-last:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._reader.join(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return int(self.popen.returncode)


class Authz:
    """``authz serve`` on free local ports. ``command`` runs authz (default:
    this interpreter's ``-m authz``; e.g. another venv's ``bin/authz``)."""

    def __init__(self, config: Path | str, *, workers: int = 2, extra: list[str] | None = None,
                 env: Mapping[str, str | None] | None = None, worker_ports: bool = False,
                 command: Sequence[str] = (sys.executable, "-m", "authz"), cwd: str | Path | None = None) -> None:
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        # Per-worker ports: consecutive free ports from a random base.
        self.worker_addresses: list[str] = []
        if worker_ports:
            base = free_port_run(workers)
            extra = [*(extra or []), "--worker-ports", str(base)]
            self.worker_addresses = [f"127.0.0.1:{base + i}" for i in range(workers)]
        self.http = f"http://127.0.0.1:{self.http_port}"
        self.proc = Proc(
            [*command, "serve", "--config", str(config), "--grpc-address", self.grpc_address,
             "--http-address", f"127.0.0.1:{self.http_port}", "--workers", str(workers), *(extra or [])],
            name="authz", env=env, cwd=cwd,
        )

    def __enter__(self) -> Authz:
        self.proc.wait_for("authz ready")
        self.channel = grpc.insecure_channel(self.grpc_address)
        self.stub = external_auth_pb2_grpc.AuthorizationStub(self.channel)
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()
        self.proc.stop()

    def check(self, request_json: dict[str, Any], timeout: float = 10.0) -> Any:
        message = json_format.ParseDict(request_json, external_auth_pb2.CheckRequest())
        return self.stub.Check(message, timeout=timeout)

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.http + path)


def http_get(url: str, headers: dict[str, str] | None = None, *, method: str = "GET",
             context: Any = None, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers=headers or {}, method=method, data=body)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def wait_listening(port: int, proc: Proc, timeout: float = 30.0) -> None:
    """Until 127.0.0.1:``port`` accepts a connection (each refusal is
    immediate), or AssertionError after ``timeout`` seconds or when ``proc``
    has exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.popen.poll() is not None:
                raise AssertionError(f"{proc.name}: port {port} never accepted; output:\n" + proc.output(60)) from None


def envoy_validate(config: Path) -> None:
    """``envoy --mode validate`` accepts ``config`` (AssertionError with Envoy's output if not)."""
    run = subprocess.run(["envoy", "--mode", "validate", "-c", str(config), "-l", "warning"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "OK" in run.stdout + run.stderr


class Envoy:
    """A real Envoy 1.40 with a config from ``authz envoy-config``."""

    def __init__(self, tmp: Path, options: EnvoyOptions, *, listen_port: int | None = None) -> None:
        """``listen_port``: the port to listen on, when a test must name it
        before Envoy starts (a sign-in redirect URI); default: a free one."""
        self.admin_port = free_port()
        self.listen_port = listen_port or free_port()
        options.admin = f"127.0.0.1:{self.admin_port}"
        options.listen = f"127.0.0.1:{self.listen_port}"
        self.config = tmp / f"envoy-{options.shape}.yaml"
        self.config.write_text(render(options))
        scheme = "https" if getattr(options, "downstream_tls_cert", None) else "http"
        self.url = f"{scheme}://127.0.0.1:{self.listen_port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.proc = Proc(
            ["envoy", "-c", str(self.config), "--disable-hot-restart", "--concurrency", "2", "-l", "info",
             "--log-format", "[%l] %v"],
            name="envoy",
        )

    def __enter__(self) -> Envoy:
        self.proc.wait_for("starting main dispatch loop")
        self.proc.wait_for("all dependencies initialized. starting workers")
        # The workers open the listener a moment after that line (later still
        # when the authz cluster is health checked): until it accepts.
        wait_listening(self.listen_port, self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stop()

    def stats(self) -> dict[str, int]:
        _status, _headers, body = http_get(self.admin + "/stats?format=json")
        out = {}
        for stat in json.loads(body)["stats"]:
            if "value" in stat:
                out[stat["name"]] = int(stat["value"])
        return out


class Echo:
    """An upstream that answers every request with the headers it received, as JSON."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                body = json.dumps({"path": self.path, "method": self.command,
                                   "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = do_PUT = do_HEAD = _answer

        class Server(ThreadingHTTPServer):
            request_queue_size = 256
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Echo:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
