from __future__ import annotations

from pathlib import Path

import pytest

from authz.config import load_policy
from authz.engine import SystemClock
from authz.server.service import CheckService, PolicyState
from authz.server.telemetry import Telemetry
from authz.wire.grpc import GRPC
from authz.wire.http import HttpDoor, HttpDoorSettings
from tests.fuzz.strategies import write_policy

#: The HTTP door as ``authz serve --http-authz-prefix /authz --trusted-forwarded-hops 1 --trust-xfcc`` runs it.
HTTP = HttpDoor(HttpDoorSettings("/authz", forwarded_hops=1, trust_xfcc=True))


@pytest.fixture(scope="session")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policy(tmp_path_factory.mktemp("fuzz-policy"))


@pytest.fixture(scope="session")
def service(policy_file: Path) -> CheckService:
    """The Check service a worker runs (both doors, real caches) on the fuzz policy."""
    state = PolicyState(load_policy(str(policy_file)), SystemClock(), doors=(GRPC, HTTP))
    return CheckService(state, Telemetry())
