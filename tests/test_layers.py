"""The rooms stay apart: the decision core imports no transport or telemetry
package, and only the gRPC door reads Envoy's messages (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "authz"
CORE = ["engine.py", "policy.py", "cel.py", "matchers.py", "paths.py", "request.py", "decision.py", "response_plan.py",
        "reply.py", "denials.py",
        "metadata.py", "sanitize.py", "callers.py", "scope.py",
        "errors.py", *(f"identity/{p.name}" for p in sorted((PACKAGE / "identity").glob("*.py")))]
#: What the core must not import: transports, Envoy's types, telemetry, and the rooms around it.
OUTSIDE_THE_CORE = ("grpc", "grpc_health", "grpc_reflection", "google.protobuf", "envoy_data_plane", "opentelemetry",
                    "prometheus_client", "granian", "authz._proto", "authz.wire", "authz.server",
                    "authz.tools", "authz.config", "authz.cli")


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_module_list_is_real() -> None:
    assert all((PACKAGE / name).is_file() for name in CORE)


@pytest.mark.parametrize("name", CORE)
def test_the_decision_core_imports_no_transport_or_telemetry(name: str) -> None:
    found = sorted(i for i in imports(PACKAGE / name) if any(i == o or i.startswith(o + ".") for o in OUTSIDE_THE_CORE))
    assert found == [], f"authz/{name} imports {found}"


def test_only_the_grpc_door_imports_envoys_messages() -> None:
    readers = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                     if "_proto" not in p.parts and any(i.startswith("authz._proto") for i in imports(p)))
    assert readers == ["wire/grpc.py"]


def test_no_module_does_more_than_one_job_by_size() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if "_proto" not in p.parts and (n := len(p.read_text().splitlines())) > 450}
    assert long == {}
