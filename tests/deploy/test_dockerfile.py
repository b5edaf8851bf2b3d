"""The Dockerfile agrees with the Kubernetes manifests and its build context.

Docker is not available where these tests run, so the image is not built;
instead: the instructions that matter are checked, every file the build copies
exists and is not excluded by .dockerignore, and the package builds from
exactly that context.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from testkit.paths import REPO
from tests.deploy.docker_context import copy_build_sources, ignored, instructions
from tests.deploy.manifests import find

K8S = REPO / "deploy" / "kubernetes"


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def exec_form(arguments: str) -> list[str]:
    parsed: list[str] = json.loads(arguments)
    return parsed


def container() -> dict[str, Any]:
    (authz,) = find("Deployment", "authz", under=K8S)["spec"]["template"]["spec"]["containers"]
    return authz  # type: ignore[no-any-return]


def test_base_image_is_python_311_slim() -> None:
    froms = [args for keyword, args in instructions() if keyword == "FROM"]
    arg = next(
        args
        for keyword, args in instructions()
        if keyword == "ARG" and args.startswith("PYTHON_IMAGE=")
    )
    assert arg == "PYTHON_IMAGE=python:3.11-slim"
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)


def test_runs_as_the_uid_the_pod_requires() -> None:
    (user,) = [args for keyword, args in final_stage() if keyword == "USER"]
    uid = user.split(":")[0]
    assert uid == "10001" == str(container()["securityContext"]["runAsUser"])
    pod = find("Deployment", "authz", under=K8S)["spec"]["template"]["spec"]
    assert user.split(":")[1] == str(pod["securityContext"]["runAsGroup"])


def test_entrypoint_cmd_and_ports_match_the_deployment() -> None:
    stage = dict(final_stage())
    assert exec_form(stage["ENTRYPOINT"]) == ["authz"]
    cmd = exec_form(stage["CMD"])
    assert cmd[:2] == ["serve", "--config"]
    deployment_config = next(
        a.split("=", 1)[1] for a in container()["args"] if a.startswith("--config=")
    )
    assert cmd[2] == deployment_config == "/etc/authz/policy/policy.yaml"
    exposed = {int(p) for p in stage["EXPOSE"].split()}
    assert exposed == {9191, 8181}
    # The image's own command serves the gRPC door and the HTTP side; the
    # Deployment also turns on the HTTP door (off unless --http-authz-address
    # is given), and that is the one port it adds.
    http_door = next(
        a.split("=", 1)[1] for a in container()["args"] if a.startswith("--http-authz-address=")
    )
    assert "--http-authz-address" not in cmd
    ports = {p["containerPort"] for p in container()["ports"]}
    assert ports - exposed == {int(http_door.rsplit(":", 1)[1])}
    assert exposed <= ports
    assert "HEALTHCHECK" in stage


def test_package_is_installed_without_a_cache() -> None:
    runs = [args for keyword, args in instructions() if keyword == "RUN"]
    assert any("pip install --no-cache-dir ." in run for run in runs)


def test_build_context_has_what_the_build_copies() -> None:
    copies = [shlex.split(args) for keyword, args in instructions() if keyword == "COPY"]
    sources = [s for args in copies if not args[0].startswith("--from=") for s in args[:-1]]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"the build copies {source}, which does not exist"
        assert not ignored(source), f".dockerignore excludes {source}, which the build copies"


@pytest.mark.parametrize(
    "path",
    [
        ".git/config",
        ".venv/bin/python",
        "tests/unit/x.py",
        "authz/__pycache__/x.pyc",
        "examples/keys/dev-issuer.pem",
        ".pytest_cache/v",
        "key.pem",
    ],
)
def test_dockerignore_keeps_local_state_and_keys_out(path: str) -> None:
    assert ignored(path)


def test_package_builds_from_the_docker_context_alone(tmp_path: Path) -> None:
    """The build stage's files alone make a wheel with the generated Envoy
    modules: setup.py compiles protos/vendor/ into authz._proto."""
    context = tmp_path / "context"
    copied = copy_build_sources(context)
    for needed in ("pyproject.toml", "setup.py", "README.md", "authz/__init__.py"):
        assert needed in copied, f"the Docker build does not copy {needed}"
    assert any(p.startswith("protos/vendor/") and p.endswith(".proto") for p in copied)
    assert not any(p.startswith("authz/_proto/") for p in copied), "generated files belong to the build"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            "--wheel-dir",
            str(tmp_path / "wheels"),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "wheels").glob("authz-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("envoy/service/auth/v3/external_auth_pb2", "envoy/config/core/v3/base_pb2"):
        assert f"authz/_proto/{module}.py" in names and f"authz/_proto/{module}.pyi" in names
    assert "authz/_proto/envoy/service/auth/v3/external_auth_pb2_grpc.py" in names
    # Only authz/ and its metadata: no top-level envoy/, google/ or .proto sources.
    assert {name.split("/")[0] for name in names} == {"authz", wheel.name.split("-py3")[0] + ".dist-info"}
