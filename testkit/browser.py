"""A real headless browser for the tests: Debian's ``chromium``, driven by the
npm package ``playwright-core`` (``testkit/browser/drive.mjs``) under Node.js.

:class:`Browser` is one browser process with one persistent profile: cookies
survive between steps, as in a person's browser. Each method is one command
with a timeout; an error or a timeout raises :class:`BrowserError`, never hangs.
The browser resolves no name but ``localhost`` and the names given in
``hosts`` (mapped to an address, e.g. ``127.0.0.1``): nothing leaves the
machine. ``scripts/setup test`` installs chromium and playwright-core;
where either is missing, :func:`unavailable` says why, for ``pytest.skip``.

What chromium does with cookies here (tests/integration/test_browser_harness.py
checks each): a ``__Host-`` cookie (Secure, no Domain, Path=/) is kept from
HTTPS pages whose certificate the browser accepts (``trust`` with the server's
own certificate, also for a mapped name the certificate does not carry; or
``ignore_https_errors``), and from plain HTTP only on ``127.0.0.1`` and
``localhost`` (secure contexts), never on a mapped name over plain HTTP.
Trusting only a CA's certificate is not enough while the server sends its
certificate without the CA (chromium matches the keys of the chain the server
sends, and it has no trust store here).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

HERE = Path(__file__).resolve().parent / "browser"
SCRIPT = HERE / "drive.mjs"
# Where chromium may be: AUTHZ_CHROMIUM first (a path), then these names on PATH.
CHROMIUM_NAMES = ("chromium", "chromium-browser")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def chromium_path() -> str | None:
    named = os.environ.get("AUTHZ_CHROMIUM")
    if named:
        return named if os.access(named, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    return None


@functools.cache
def _broken(path: str) -> str | None:
    """Why ``path --version`` does not answer as a chromium (Ubuntu's chromium-browser may be
    a wrapper that only says to install a snap); None when it does."""
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{path} --version failed: {exc}"
    if done.returncode != 0 or "Chrom" not in done.stdout:
        return f"{path} --version did not answer as chromium: {(done.stdout + done.stderr).strip()[:200]!r}"
    return None


def unavailable() -> str | None:
    """None when the browser can run here; else why not (a skip reason)."""
    if shutil.which("node") is None:
        return "Node.js is not on PATH (scripts/setup test installs it)"
    named = os.environ.get("AUTHZ_CHROMIUM")
    if named and chromium_path() is None:
        return f"AUTHZ_CHROMIUM={named} is not an executable"
    if chromium_path() is None:
        return "chromium is not on PATH (Debian package chromium; scripts/setup test installs it as root)"
    if not (HERE / "node_modules" / "playwright-core" / "package.json").is_file():
        return f"the npm package playwright-core is not installed in {HERE} (scripts/setup test installs it)"
    return _broken(str(chromium_path()))


def spki_sha256(cert_path: Path) -> str:
    """Base64 SHA-256 of a PEM certificate's public key: what chromium's
    ``--ignore-certificate-errors-spki-list`` names."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


class BrowserError(Exception):
    """A command failed or timed out (the message is the browser's), or the browser is gone."""


@dataclass(frozen=True)
class Page:
    """Where the main frame is after a navigation, and the status of the response it came from
    (None for a page that had none, e.g. ``about:blank``)."""

    url: str
    status: int | None


@dataclass(frozen=True)
class Hop:
    """One main-frame response of a navigation: a 30x with its ``location``, or the final answer."""

    status: int | None
    url: str
    location: str | None


@dataclass(frozen=True)
class Cookie:
    name: str
    value: str
    domain: str
    path: str
    secure: bool
    http_only: bool
    same_site: str  # "Strict", "Lax" or "None"
    expires: float  # seconds since the epoch; -1 for a session cookie


class Browser:
    """One headless chromium; a context manager (the process and its profile are gone on exit).

    ``trust``: PEM certificates whose keys the browser accepts for HTTPS despite an
    unknown issuer (a server certificate of testkit/pki.py; chromium matches keys
    of the chain the server sends). ``ignore_https_errors`` accepts any certificate.
    ``hosts``: names the browser resolves, each to an address (others fail at once).
    ``timeout``: the default bound of each command, in seconds."""

    def __init__(self, *, trust: Iterable[Path] = (), ignore_https_errors: bool = False,
                 hosts: Mapping[str, str] | None = None, timeout: float = 15.0) -> None:
        self._trust = [spki_sha256(Path(path)) for path in trust]
        self._ignore_https_errors = ignore_https_errors
        self._hosts = dict(hosts or {})
        self.timeout = timeout
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._popen: subprocess.Popen[str] | None = None
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._next_id = 0
        self._readers: list[threading.Thread] = []
        self.version = ""

    # -- the process ------------------------------------------------------------

    def start(self) -> Browser:
        reason = unavailable()
        if reason is not None:
            raise BrowserError(reason)
        self._dir = tempfile.TemporaryDirectory(prefix="authz-browser-")
        config = Path(self._dir.name) / "config.json"
        rules = [f"MAP {name} {address}" for name, address in self._hosts.items()]
        rules += ["MAP * ~NOTFOUND", "EXCLUDE localhost", "EXCLUDE 127.0.0.1"]
        config.write_text(json.dumps({
            "executablePath": chromium_path(), "userDataDir": str(Path(self._dir.name) / "profile"),
            "noSandbox": os.geteuid() == 0, "ignoreHTTPSErrors": self._ignore_https_errors,
            "trustSpki": self._trust, "hostRules": ", ".join(rules), "timeoutMs": int(self.timeout * 1000),
        }))
        # Its own process group: chromium's processes go with it on exit.
        self._popen = subprocess.Popen(["node", str(SCRIPT), str(config)], cwd=HERE, text=True, bufsize=1,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       start_new_session=True)
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()
        try:
            ready = self._receive(60.0, "launch")
            if not ready.get("ready"):
                raise BrowserError(f"chromium did not start: {ready.get('error')}")
        except BaseException:
            self.stop()
            raise
        self.version = str(ready.get("version") or "")
        return self

    def _read_stdout(self) -> None:
        assert self._popen is not None and self._popen.stdout is not None
        for line in self._popen.stdout:
            self._answers.put(line)
        self._answers.put(None)

    def _read_stderr(self) -> None:
        assert self._popen is not None and self._popen.stderr is not None
        for line in self._popen.stderr:
            self._stderr.append(line.rstrip("\n"))
            del self._stderr[:-40]

    def _receive(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise BrowserError(f"{what}: the browser did not answer within {timeout:.0f}s (stopped it)") from None
        if line is None:
            raise BrowserError(f"{what}: the browser process ended; its last output:\n" + "\n".join(self._stderr))
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise BrowserError(f"{what}: not an answer: {line!r}")
        return answer

    def stop(self) -> None:
        popen, self._popen = self._popen, None
        if popen is not None:
            if popen.stdin is not None and not popen.stdin.closed:
                with contextlib.suppress(OSError):
                    popen.stdin.close()  # end of commands: drive.mjs closes the browser and exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)  # whatever of the group is left
            popen.wait(10)
            for reader in self._readers:
                reader.join(5)
            for stream in (popen.stdout, popen.stderr):
                if stream is not None:
                    stream.close()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, cmd: str, timeout: float | None = None, **args: Any) -> Any:
        """One command of drive.mjs; its result, or BrowserError."""
        if self._popen is None or self._popen.stdin is None:
            raise BrowserError(f"{cmd}: the browser is not running")
        bound = self.timeout if timeout is None else timeout
        self._next_id += 1
        command_id = self._next_id
        try:
            self._popen.stdin.write(json.dumps({"id": command_id, "cmd": cmd, "args": args,
                                                "timeoutMs": int(bound * 1000)}) + "\n")
            self._popen.stdin.flush()
        except OSError as exc:
            raise BrowserError(f"{cmd}: the browser process is gone ({exc})") from None
        # drive.mjs answers every command within its bound plus a second; more is a hung browser.
        answer = self._receive(bound + 10.0, cmd)
        if answer.get("id") != command_id:
            raise BrowserError(f"{cmd}: an answer out of order: {answer}")
        if not answer.get("ok"):
            raise BrowserError(f"{cmd} {args}: " + _ANSI.sub("", str(answer.get("error"))))
        return answer.get("result")

    # -- commands -----------------------------------------------------------------

    @staticmethod
    def _page(result: Any) -> Page:
        return Page(url=str(result["url"]), status=result["status"])

    def goto(self, url: str, *, timeout: float | None = None) -> Page:
        """Navigates and waits for the page's load event (after every redirect)."""
        return self._page(self.call("goto", timeout, url=url))

    def fill(self, selector: str, value: str, *, timeout: float | None = None) -> None:
        self.call("fill", timeout, selector=selector, value=value)

    def click(self, selector: str, *, timeout: float | None = None) -> Page:
        """Clicks and waits for the navigation the click causes (a form's submit, a link)."""
        return self._page(self.call("click", timeout, selector=selector, navigation=True))

    def click_only(self, selector: str, *, timeout: float | None = None) -> None:
        """Clicks without waiting for a navigation (a button that changes the page in place)."""
        self.call("click", timeout, selector=selector, navigation=False)

    def url(self) -> str:
        return str(self.call("url"))

    def content(self) -> str:
        """The page's HTML as it is now."""
        return str(self.call("content"))

    def text(self, selector: str, *, timeout: float | None = None) -> str:
        """The visible text of the first element matching ``selector`` (waits for it)."""
        return str(self.call("text", timeout, selector=selector))

    def cookies(self, *urls: str) -> list[Cookie]:
        """The profile's cookies (those sent to ``urls``, when given)."""
        return [Cookie(name=c["name"], value=c["value"], domain=c["domain"], path=c["path"], secure=c["secure"],
                       http_only=c["httpOnly"], same_site=c["sameSite"], expires=c["expires"])
                for c in self.call("cookies", urls=list(urls))]

    def cookie(self, name: str, *urls: str) -> Cookie | None:
        return next((c for c in self.cookies(*urls) if c.name == name), None)

    def clear_cookies(self) -> None:
        self.call("clear_cookies")

    def reload(self, *, timeout: float | None = None) -> Page:
        return self._page(self.call("reload", timeout))

    def wait_for_url(self, pattern: str, *, timeout: float | None = None) -> Page:
        """Waits (on the browser's navigation events) until the URL matches ``pattern`` (a
        JavaScript regular expression, searched) and the page has loaded."""
        return self._page(self.call("wait_for_url", timeout, pattern=pattern))

    def status(self) -> int | None:
        """The status of the main frame's last response (the final one of the last navigation)."""
        result = self.call("status")
        return None if result is None else int(result)

    def chain(self) -> list[Hop]:
        """The main-frame responses of the last navigation, first first: each redirect, then the final answer."""
        return [Hop(status=h["status"], url=h["url"], location=h["location"]) for h in self.call("chain")]
