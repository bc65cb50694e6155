"""The pytest fixtures: one SeaweedFS and one moto server per session (from testbed.servers), fresh buckets per test.

What a test uses from them (`Store`, `run_cli`, `shape`, the fault proxy, ...) lives in
the test bed package, testbed/, which the benchmarks share.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.servers import moto_server, seaweedfs
from testbed.store import Store


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with seaweedfs(tmp_path_factory.mktemp("seaweed")) as s:
        yield s


@pytest.fixture(scope="session")
def moto() -> Iterator[Store]:
    with moto_server() as s:
        yield s


@pytest.fixture(params=["seaweedfs", "moto"])
def store(request: pytest.FixtureRequest) -> Store:
    s: Store = request.getfixturevalue("seaweed" if request.param == "seaweedfs" else "moto")
    return s


@pytest.fixture
def manifest(tmp_path: Path) -> str:
    return str(tmp_path / "job.db")
