"""The Dockerfile agrees with the Kubernetes manifests and its build context.

Docker is not available where these tests run, so the image is not built;
instead: the instructions that matter are checked, every file the build copies
exists and is not excluded by .dockerignore, and the package builds from
exactly that context.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.manifests import find
from tests.support.paths import REPO

K8S = REPO / "deploy" / "kubernetes"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    result = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def exec_form(arguments: str) -> list[str]:
    parsed: list[str] = json.loads(arguments)
    return parsed


def ignored(path: str) -> bool:
    """Whether .dockerignore excludes ``path`` (no `!` exceptions are used)."""
    patterns = [
        p.strip() for p in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    ]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    assert not any(p.startswith("!") for p in patterns)
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(Path(prefix).name, bare)
            ):
                return True
    return False


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
    assert exposed == {p["containerPort"] for p in container()["ports"]} == {9191, 8181}
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
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        assert (REPO / name).is_file(), f"{name} is missing; the Docker build copies it"
        shutil.copy2(REPO / name, context / name)
    shutil.copytree(
        REPO / "authz", context / "authz", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
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
    assert wheel.stat().st_size > 0
