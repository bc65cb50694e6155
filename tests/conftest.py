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
def pair(seaweed: Store) -> Iterator[tuple[str, str]]:
    """A fresh bucket pair, dropped after the test: the session's SeaweedFS has room for ~75 buckets with data."""
    src, dst = seaweed.buckets()
    yield src, dst
    for b in (src, dst):
        seaweed.client.delete_bucket(Bucket=b)  # SeaweedFS drops a bucket with its contents (and its volumes)


@pytest.fixture
def manifest(tmp_path: Path) -> str:
    return str(tmp_path / "job.db")


# The second run of a scenario already covered once in the default run: the same outage, TLS or
# credential scenario on the other HTTP path or moment. The default run (CI's) keeps one of each
# scenario, and the botocore path wherever the paths differ in what is tested (certificates, the
# refusals); `pytest --thorough` (or BACKFILL_THOROUGH=1) runs these too.
THOROUGH = (
    "test_long_history.py::test_a_long_history_is_spilled_and_copied_oldest_first_in_chunks[3000]",
    "test_tls.py::test_sigkill_then_resume_over_tls[botocore]",
    "test_tls.py::test_injected_faults_over_tls[botocore]",
    "test_outage.py::test_outage_while_listing_pauses_and_carries_on[botocore]",
    "test_outage.py::test_outage_while_copying_pauses_and_carries_on[lean-http]",
    "test_outage.py::test_outage_while_copying_pauses_and_carries_on[botocore-https]",
    "test_outage.py::test_outage_during_multipart_copies[botocore]",
    "test_outage.py::test_outages_at_random_moments[botocore",
    "test_outage.py::test_past_the_outage_timeout_it_stops_like_ctrl_c_and_the_resume_completes[botocore]",
    "test_outage.py::test_a_stopped_process_longer_than_the_read_timeout_goes_on[botocore]",
    "test_credentials.py::test_credentials_are_refreshed_before_they_expire[botocore]",
    "test_credentials.py::test_a_refresh_that_fails_stops_like_ctrl_c[botocore]",
    # StopRun through --state is covered by test_credentials.py's expired token in a state run
    "test_state_outage.py::test_past_the_outage_timeout_a_state_run_stops_like_ctrl_c_and_the_resume_completes",
    "test_credentials.py::test_expired_token_mid_run_stops_like_ctrl_c_and_fails_nothing[lean]",  # botocore's runs
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--thorough", action="store_true", help="also run the second runs of scenarios (THOROUGH)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import os

    if config.getoption("--thorough") or os.environ.get("BACKFILL_THOROUGH") == "1":
        return
    skip = pytest.mark.skip(reason="a second run of a scenario the default run covers: pytest --thorough runs it")
    for item in items:
        if any(item.nodeid.removeprefix("tests/").startswith(t) for t in THOROUGH):
            item.add_marker(skip)
