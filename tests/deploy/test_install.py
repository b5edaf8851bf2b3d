"""What users install: the wheel built from the Docker build's files, installed
(not editable) into a fresh venv with its dependencies from the package index.

The editable dev venv can hide packaging faults: a distribution that overwrote
another's files (xds-protos shipped an old opentelemetry/proto/common_pb2.py,
and OTLP tracing then killed every worker with an ImportError) shows up only in
some install orders. Here every installed file must have exactly one owner,
and a real ``authz serve`` from that venv exports its Check spans over
OTLP/HTTP protobuf to a receiver in this process, joined to the W3C and B3
trace contexts the CheckRequests carry.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from testkit.paths import EXAMPLES
from testkit.procs import Authz
from testkit.requests import check_request_json
from tests.deploy.docker_context import copy_build_sources

pytestmark = pytest.mark.integration

SPAN_NAME = "authz.Check"
SERVICE_NAME = "authz-install-test"
#: Variables that would make the venv's Python import something else than
#: what is installed in it.
_FOREIGN: dict[str, str | None] = {"PYTHONPATH": None, "PYTHONHOME": None, "PYTHONUSERBASE": None,
                                   "PYTHONSTARTUP": None}


@dataclass(frozen=True)
class Venv:
    root: Path
    site_packages: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def authz(self) -> Path:
        return self.root / "bin" / "authz"

    def run(self, code: str, cwd: Path) -> str:
        """Output of ``python -c code`` in the venv, from ``cwd`` (never the checkout)."""
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
        done = subprocess.run([str(self.python), "-c", code], capture_output=True, text=True,
                              cwd=cwd, env=env, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


def _run(args: list[str], *, cwd: Path, timeout: float) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
    done = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """The wheel built as the Docker build builds it (only the files it
    copies; pip's isolated build with the declared build requirements),
    installed into a new venv with its dependencies."""
    tmp = tmp_path_factory.mktemp("install")
    context = tmp / "context"
    copy_build_sources(context)
    wheels = tmp / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), str(context)],
         cwd=tmp, timeout=300)
    (wheel,) = wheels.glob("authz-*.whl")
    root = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(root)], cwd=tmp, timeout=120)
    _run([str(root / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", str(wheel)],
         cwd=tmp, timeout=400)
    (site_packages,) = (root / "lib").glob("python3.*/site-packages")
    return Venv(root, site_packages)


def _owners(site_packages: Path) -> dict[str, list[str]]:
    """Installed path (relative to site-packages) -> the distributions whose
    RECORD lists it."""
    owners: dict[str, list[str]] = defaultdict(list)
    for record in site_packages.glob("*.dist-info/RECORD"):
        distribution = record.parent.name.split("-")[0]
        for line in record.read_text(encoding="utf-8").splitlines():
            path = line.rsplit(",", 2)[0]
            if path:
                owners[os.path.normpath(path)].append(distribution)
    return owners


def test_every_installed_file_has_one_owner(venv: Venv) -> None:
    owners = _owners(venv.site_packages)
    common = os.path.normpath("opentelemetry/proto/common/v1/common_pb2.py")
    assert owners[common] == ["opentelemetry_proto"], f"{common} is owned by {owners[common]}"
    status = os.path.normpath("google/rpc/status_pb2.py")
    assert owners[status] == ["googleapis_common_protos"], f"{status} is owned by {owners[status]}"
    overlapping = {path: names for path, names in owners.items() if len(names) > 1}
    assert not overlapping, f"files installed by more than one distribution (the last one wins): {overlapping}"


def test_no_foreign_envoy_protos_and_the_generated_ones_are_authz_own(venv: Venv, tmp_path: Path) -> None:
    for top_level in ("envoy", "udpa", "validate", "xds"):
        assert not (venv.site_packages / top_level).exists(), f"a top-level {top_level}/ package is installed"
    generated = venv.site_packages / "authz" / "_proto" / "envoy" / "service" / "auth" / "v3"
    assert {p.name for p in generated.iterdir()} >= {
        "external_auth_pb2.py", "external_auth_pb2.pyi", "external_auth_pb2_grpc.py"}
    out = venv.run(
        "import authz, authz.wire.grpc\n"
        "from google.protobuf.internal import api_implementation\n"
        "from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope\n"
        "print(authz.__file__)\n"
        "print(api_implementation.Type())\n"
        "print(authz.wire.grpc.CheckRequest.DESCRIPTOR.full_name, authz.wire.grpc.CheckRequest.__module__)\n"
        "print(InstrumentationScope.DESCRIPTOR.full_name)\n",
        cwd=tmp_path,
    ).splitlines()
    assert Path(out[0]).is_relative_to(venv.site_packages), f"authz imported from {out[0]}, not the venv"
    assert out[1] == "upb"
    assert out[2] == "envoy.service.auth.v3.CheckRequest authz._proto.envoy.service.auth.v3.external_auth_pb2"
    assert out[3] == "opentelemetry.proto.common.v1.InstrumentationScope"


# -- a real OTLP/HTTP receiver ------------------------------------------------------------


class SpanReceiver:
    """POST /v1/traces with an ExportTraceServiceRequest (protobuf), as an
    OpenTelemetry collector receives it; keeps every span with its resource."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []
        self.errors: list[str] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    receiver._error(f"unexpected {self.path} {self.headers.get('Content-Type')}")
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver._add(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _error(self, message: str) -> None:
        with self._cond:
            self.errors.append(message)

    def _add(self, request: Any) -> None:
        with self._cond:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((resource, span) for span in scope_spans.spans)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[tuple[dict[str, Any], Any]]], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.spans):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"spans not received within {timeout}s; got {len(self.spans)}: "
                                         f"{[(s.name, s.trace_id.hex()) for _r, s in self.spans]}")
                self._cond.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[SpanReceiver]:
    server = SpanReceiver()
    yield server
    server.close()


# Trace contexts as Envoy forwards them in the CheckRequest's headers.
W3C_TRACE, W3C_PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
B3_TRACE, B3_PARENT = "463ac35c9f6413ad48485a3953bb6124", "0020000000000001"
B3_64_TRACE, B3_64_PARENT = "a3ce929d0e0e4736", "00f067aa0ba902b7"
SINGLE_TRACE, SINGLE_PARENT = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"
CASES: dict[str, tuple[dict[str, str], str, str]] = {
    "w3c traceparent": ({"traceparent": f"00-{W3C_TRACE}-{W3C_PARENT}-01", "tracestate": "vendor=x"},
                        W3C_TRACE, W3C_PARENT),
    "b3 multi-header": ({"x-b3-traceid": B3_TRACE, "x-b3-spanid": B3_PARENT, "x-b3-sampled": "1"},
                        B3_TRACE, B3_PARENT),
    # A 64-bit B3 trace id is a 128-bit one with zeros in front.
    "b3 multi-header, 64-bit id": ({"x-b3-traceid": B3_64_TRACE, "x-b3-spanid": B3_64_PARENT, "x-b3-sampled": "1"},
                                   "0" * 16 + B3_64_TRACE, B3_64_PARENT),
    "b3 single header": ({"b3": f"{SINGLE_TRACE}-{SINGLE_PARENT}-1"}, SINGLE_TRACE, SINGLE_PARENT),
}


def test_serve_exports_spans_joined_to_w3c_and_b3_parents_over_otlp_http(
        venv: Venv, receiver: SpanReceiver, tmp_path: Path) -> None:
    examples = tmp_path / "examples"
    shutil.copytree(EXAMPLES, examples)
    env = {
        **_FOREIGN,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms: export promptly
        "OTEL_SERVICE_NAME": SERVICE_NAME,
        "OTEL_TRACES_EXPORTER": None, "OTEL_SDK_DISABLED": None, "OTEL_TRACES_SAMPLER": None,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": None, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": None,
    }
    with Authz(examples / "policy.yaml", workers=1, env=env, command=[str(venv.authz)], cwd=tmp_path) as authz:
        for name, (headers, _trace, _parent) in CASES.items():
            response = authz.check(check_request_json("GET", "/public/ping", headers=headers))
            assert response.status.code == 0, f"{name}: {response.status}"

        expected = {bytes.fromhex(trace) for _h, trace, _p in CASES.values()}

        def all_arrived(spans: list[tuple[dict[str, Any], Any]]) -> bool:
            return expected <= {span.trace_id for _resource, span in spans}

        receiver.wait_for(all_arrived, timeout=30)
        assert "Traceback" not in authz.proc.output(), authz.proc.output()
    assert not receiver.errors
    by_trace = {span.trace_id: (resource, span) for resource, span in receiver.spans}
    for name, (_headers, trace, parent) in CASES.items():
        resource, span = by_trace[bytes.fromhex(trace)]
        assert span.name == SPAN_NAME, name
        assert span.parent_span_id == bytes.fromhex(parent), f"{name}: parent {span.parent_span_id.hex()}"
        assert span.span_id not in (b"", bytes.fromhex(parent)), name
        assert span.kind == span.SPAN_KIND_SERVER, name
        assert resource["service.name"] == SERVICE_NAME, name
