"""One policy generation for every worker (docs/security.md 64): a worker
accepts the supervisor's generation only from exactly the files it was
validated from, and is not ready while it cannot."""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
from pathlib import Path

import pytest

from authz.cli import build_parser
from authz.config import KeyRegistry
from authz.server.generation import NotThisGeneration, Target, load_consistent, load_target
from authz.server.options import ServeOptions
from authz.server.worker import Worker
from testkit.paths import ACCEPTANCE


def _policy(tmp_path: Path) -> Path:
    for name in ("policy.yaml", "corp.jwks.json", "identity-es256.pem"):
        shutil.copy(ACCEPTANCE / name, tmp_path / name)
    return tmp_path / "policy.yaml"


def _target(path: Path) -> Target:
    policy, digests = load_consistent(str(path))
    assert str(path) in digests and len(digests) == len(policy.files)
    return Target(policy.generation, digests)


def test_a_worker_runs_the_target_numbered_as_the_supervisor_numbered_it(tmp_path: Path) -> None:
    path = _policy(tmp_path)
    target = Target(41, _target(path).digests)
    assert load_target(str(path), target, KeyRegistry()).generation == 41
    assert Target.from_message(target.as_message()) == target


@pytest.mark.parametrize("edit", ["policy.yaml", "corp.jwks.json"])
def test_a_file_changed_since_validation_is_not_that_generation(tmp_path: Path, edit: str) -> None:
    path = _policy(tmp_path)
    target = _target(path)
    changed = tmp_path / edit
    changed.write_text(changed.read_text() + "\n")  # still valid, but not what was validated
    with pytest.raises(NotThisGeneration, match=f"since generation {target.generation}"):
        load_target(str(path), target, KeyRegistry())


def test_a_worker_that_cannot_load_the_target_is_not_ready_until_it_can(tmp_path: Path) -> None:
    path = _policy(tmp_path)
    original = path.read_text()
    options = ServeOptions.from_args(build_parser().parse_args(["serve", "--config", str(path), "--workers", "1"]))
    _parent, child = multiprocessing.Pipe()
    first = _target(path)
    worker = Worker(options, 0, child, first)
    assert asyncio.run(worker._handle({"op": "reload"}))["ok"]
    worker.ready = True  # as once listening
    assert worker.status()["ready"] and worker.status()["generation"] == first.generation

    path.write_text(original.replace("version: 1", "version: 2"))
    second = Target(first.generation + 1, first.digests)  # what it was told to run is gone
    reply = asyncio.run(worker._handle({"op": "reload", "target": second.as_message()}))
    assert not reply["ok"] and "changed since" in reply["error"]
    status = worker.status()
    assert not status["ready"] and status["generation"] == first.generation and status["target"] == second.generation

    path.write_text(original)
    third = _target(path)
    assert asyncio.run(worker._handle({"op": "reload", "target": third.as_message()}))["ok"]
    status = worker.status()
    assert status["ready"] and status["generation"] == third.generation and status["last_reload_error"] is None
