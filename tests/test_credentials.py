"""Credentials that expire in the night, and a clock that is off.

A `credential_process` (testbed.credentials) hands out temporary credentials (a key pair of a
pool of SeaweedFS identities per issue, with an Expiration); a gate in front of SeaweedFS
(testbed.gate) answers ExpiredToken for the keys the test revokes, as S3 does for an STS session
that has run out (400 ExpiredToken, "The provided token has expired.":
https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html). SeaweedFS itself knows
static keys only, and refuses session tokens it did not issue.

- Credentials with an Expiration are refreshed by botocore before they expire (advisory window
  15 min, mandatory 10 min: botocore/credentials.py _DEFAULT_ADVISORY_REFRESH_TIMEOUT and
  _DEFAULT_MANDATORY_REFRESH_TIMEOUT; the credential_process contract:
  https://docs.aws.amazon.com/cli/latest/userguide/cli-configure-sourcing-external.html). Both
  HTTP paths must pick the refreshed ones up: the lean path signs with its own copy.
- When the service refuses the credentials after things worked (ExpiredToken), or the refresh
  itself fails, the run stops like Ctrl-C: one line naming the profile and how to renew it,
  exit 2, the resume command printed, and no version marked FAILED for it.
- Clock skew: S3 refuses a request dated more than 15 minutes from its clock with 403
  RequestTimeTooSkewed (same reference; botocore does not correct for skew: boto/boto3#1252, as
  aws/aws-cli#8662 was told). One line saying how far the clock is off; exit 2.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from backfill.seaweed import seaweed_server
from testbed import credentials
from testbed.gate import Gate, expired_credentials, skewed_clock
from testbed.outage import wait_until
from testbed.seeds import seed_many
from testbed.store import Run, Store, assert_exact_replica, copied_versions, run_cli, start_cli_with
from testbed.tls import HTTP_PATHS, plain_store

PROFILE = "night"


@dataclass
class Night:
    """A profile whose credentials come from testbed.credentials, reaching SeaweedFS through a gate."""

    store: Store
    gate: Gate
    revoked: set[str]
    state: Path
    env: dict[str, str]

    def args(self, src: str, dst: str, manifest: str, http: str, *extra: str) -> list[str]:
        return [
            "copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--http", http, "--json",
            "--source-profile", PROFILE, "--dest-profile", PROFILE, "--concurrency", "16", *extra,
        ]  # fmt: skip

    def run(self, *args: str) -> Run:
        return run_cli(*args, env=self.env, timeout=300)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return start_cli_with(self.env, *args)

    def revoke_all(self) -> None:
        self.revoked.update(credentials.issued(self.state))


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A SeaweedFS of this module's own, whose identities include testbed.credentials' pool."""
    with seaweed_server(tmp_path_factory.mktemp("pooled"), identities=credentials.identities()) as server:
        yield plain_store(server.info)


@pytest.fixture
def night(pooled: Store, tmp_path: Path) -> Iterator[Night]:
    state = tmp_path / "credentials"
    credentials.write_state(state)
    config = tmp_path / "aws-config"
    config.write_text(credentials.profile_config(state, PROFILE))
    revoked: set[str] = set()
    with Gate(pooled.endpoint, rule=expired_credentials(revoked)) as gate:
        env = {
            "AWS_CONFIG_FILE": str(config),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials-file"),
            "AWS_ENDPOINT_URL": gate.endpoint_url,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        yield Night(pooled, gate, revoked, state, env)


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("backfill: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def _states(manifest: str) -> dict[int, int]:
    with sqlite3.connect(manifest) as db:
        return dict(db.execute("SELECT state, count(*) FROM version GROUP BY state").fetchall())


def _stop_mid_run(night: Night, args: list[str], manifest: str, act: object) -> tuple[int, str]:
    p = night.start(*args)
    try:
        wait_until(lambda: copied_versions(manifest) >= 300 or p.poll() is not None)
        assert p.poll() is None, "the copy ended before the credentials could expire: seed more keys"
        act()  # type: ignore[operator]
        _, err = p.communicate(timeout=240)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.communicate()
    return p.returncode, err


@pytest.mark.parametrize("http", HTTP_PATHS)
def test_expired_token_mid_run_stops_like_ctrl_c_and_fails_nothing(night: Night, manifest: str, http: str) -> None:
    src, dst = night.store.buckets()
    total = seed_many(night.store, src, 2500)
    args = night.args(src, dst, manifest, http, "--max-rps", "400")
    code, err = _stop_mid_run(night, args, manifest, night.revoke_all)
    assert code == 2, (code, err)
    line = _one_error_line(err)
    assert PROFILE in line and "expired" in line.lower(), line
    assert "To resume, run: backfill copy" in err, err
    states = _states(manifest)
    assert states.get(2, 0) == 0, f"versions marked FAILED for expired credentials: {states}"
    assert night.gate.stats.get("answered", 0) > 0
    # Renewed credentials (the next process run issues a token nobody revoked): the resume completes.
    r = night.run(*night.args(src, dst, manifest, http))
    assert r.code == 0, r.stderr
    job = json.loads(r.stdout)["job"]
    assert job["copied"] == total and job["failed"] == 0
    assert_exact_replica(night.store, src, dst)


@pytest.mark.parametrize("http", HTTP_PATHS)
def test_a_refresh_that_fails_stops_like_ctrl_c(night: Night, manifest: str, http: str) -> None:
    """Credentials inside botocore's mandatory refresh window (10 min) are refreshed on every use
    (botocore runs the process for each request's signature on the botocore path; the lean path asks
    every 5 s); once the process fails, botocore raises: the run stops, names the profile, fails nothing."""
    credentials.write_state(night.state, valid_for=9 * 60)
    src, dst = night.store.buckets()
    total = seed_many(night.store, src, 1200)
    args = night.args(src, dst, manifest, http, "--max-rps", "100")  # outlasts the lean path's 5 s
    code, err = _stop_mid_run(night, args, manifest, lambda: credentials.fail_refreshes(night.state))
    assert code == 2, (code, err)
    line = _one_error_line(err)
    assert PROFILE in line, line
    assert _states(manifest).get(2, 0) == 0
    (night.state / "fail").unlink()
    credentials.write_state(night.state, valid_for=3600)  # renewed: an hour, outside the refresh windows
    r = night.run(*night.args(src, dst, manifest, http))
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["job"]["copied"] == total
    assert_exact_replica(night.store, src, dst)


@pytest.mark.parametrize("http", HTTP_PATHS)
def test_credentials_are_refreshed_before_they_expire(pooled: Store, tmp_path: Path, manifest: str, http: str) -> None:
    """Each key is refused 12 s after it was issued; each expires (for botocore) 15 min + 3 s after:
    botocore refreshes 3 s after each issue (the advisory window), and both paths must sign with
    the new key within the remaining 9 s."""
    seaweed = pooled
    state = tmp_path / "credentials"
    credentials.write_state(state, valid_for=15 * 60 + 3)
    config = tmp_path / "aws-config"
    config.write_text(credentials.profile_config(state, PROFILE))
    src, dst = seaweed.buckets()
    total = seed_many(seaweed, src, 1000)
    rule = expired_credentials(set(), issued=lambda: credentials.issued(state), lifetime=12)
    with Gate(seaweed.endpoint, rule=rule) as gate:
        env = {
            "AWS_CONFIG_FILE": str(config),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_ENDPOINT_URL": gate.endpoint_url,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        started = time.monotonic()
        r = run_cli(
            "copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--http", http, "--json",
            "--source-profile", PROFILE, "--dest-profile", PROFILE, "--max-rps", "50",
            env=env, timeout=300,
        )  # fmt: skip
        took = time.monotonic() - started
        answered = gate.stats.get("answered", 0)
    assert r.code == 0, r.stderr
    assert took > 15, "the run must outlast a token's 12 s for this test to mean anything"
    assert answered == 0, f"{answered} requests were signed with expired credentials"
    assert len(credentials.issued(state)) >= 3
    assert json.loads(r.stdout)["job"]["copied"] == total
    assert_exact_replica(seaweed, src, dst)


@pytest.mark.parametrize("http", HTTP_PATHS)
def test_clock_skew_is_one_line_saying_how_far_off(seaweed: Store, manifest: str, http: str) -> None:
    src, dst = seaweed.buckets()
    seaweed.client.put_object(Bucket=src, Key="k", Body=b"v")
    # The server's clock is 20 minutes ahead of ours: every request is dated too far in its past.
    with Gate(seaweed.endpoint, rule=skewed_clock(timedelta(minutes=20))) as gate:
        r = seaweed.run(
            "copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--http", http,
            env={"AWS_ENDPOINT_URL": gate.endpoint_url}, timeout=120,
        )  # fmt: skip
    assert r.code == 2, (r.code, r.stderr)
    line = _one_error_line(r.stderr)
    assert "clock" in line.lower() and "20 min" in line and "behind" in line, line
    assert seaweed.history(dst) == {}


def test_expired_token_in_a_state_run_stops_like_ctrl_c_and_the_resume_completes(night: Night, tmp_path: Path) -> None:
    """The same in a multi-shard run (`copy --state s3://…`, local workers): the state location is reached
    with the replica's profile, so its lease writes are refused too. Every shard stops as after Ctrl-C,
    one line, exit 2, the resume command; no shard file records a FAILED version; the resume takes the
    shards over (their leases lapse) and completes exact."""
    s = night.store
    src, dst = s.buckets()
    ctl, _ = s.buckets(versioned=False, dest_versioned=False)
    total = seed_many(s, src, 1200)
    state = f"s3://{ctl}/run/"
    args = [
        "copy", f"s3://{src}", f"s3://{dst}", "--state", state, "--json", "--shards", "4",
        "--source-profile", PROFILE, "--dest-profile", PROFILE, "--concurrency", "8", "--max-rps", "200",
        "--lease-seconds", "2", "--settle-seconds", "1", "--checkpoint-seconds", "0.5",
    ]  # fmt: skip
    p = night.start(*args)
    try:
        wait_until(lambda: s.client.list_objects_v2(Bucket=dst).get("KeyCount", 0) >= 200 or p.poll() is not None)
        assert p.poll() is None, "the copy ended before the credentials could expire: seed more keys"
        night.revoke_all()
        _, err = p.communicate(timeout=240)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.communicate()
    assert p.returncode == 2, (p.returncode, err)
    line = _one_error_line(err)
    assert PROFILE in line and "expired" in line.lower(), line
    assert "To resume, run: backfill copy" in err, err
    # The shard files the leases name (read past the gate): nothing FAILED for the credentials.
    for o in s.client.list_objects_v2(Bucket=ctl, Prefix="run/shards/").get("Contents", []):
        if o["Key"].endswith(".db"):
            path = tmp_path / o["Key"].rpartition("/")[2]
            path.write_bytes(s.client.get_object(Bucket=ctl, Key=o["Key"])["Body"].read())
            assert _states(str(path)).get(2, 0) == 0, f"{o['Key']}: versions marked FAILED for expired credentials"
    r = night.run(*args)
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["job"]["failed"] == 0
    assert_exact_replica(s, src, dst)
    merged = tmp_path / "merged.db"
    r = night.run("status", "--state", state, "--profile", PROFILE, "--json", "--merge-to", str(merged))
    assert r.code == 0, r.stderr
    assert _states(str(merged)) == {1: total}
