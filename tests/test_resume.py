"""Stopping and resuming: SIGKILL mid-copy, Ctrl-C, reruns. Nothing lost, nothing duplicated."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable

from testbed.seeds import seed_many
from testbed.store import Store, assert_exact_replica, copied_versions, start_cli

KEYS = 1500


def _wait_until(cond: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sigkill_then_resume_loses_and_duplicates_nothing(seaweed: Store, manifest: str) -> None:
    src, dst = seaweed.buckets()
    total = seed_many(seaweed, src, KEYS)
    args = ["copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--concurrency", "16", "--shards", "4"]
    # Kill it twice at different depths: early (mid-listing) and later (mid-copy).
    for threshold in (150, 700):
        p = start_cli(seaweed, *args)
        try:
            _wait_until(lambda t=threshold, p=p: copied_versions(manifest) >= t or p.poll() is not None)  # type: ignore[misc]
        finally:
            p.send_signal(signal.SIGKILL)
            p.communicate()
        assert p.returncode == -signal.SIGKILL, "the copy finished before it could be killed: seed more keys"
    with sqlite3.connect(manifest) as db:
        pending = db.execute("SELECT count(*) FROM version WHERE state = 0").fetchone()[0]
    assert pending > 0  # the kill left versions written ahead but not recorded as copied

    r = seaweed.run(*args, "--json")
    assert r.code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["job"]["copied"] == total and s["job"]["pending"] == 0 and s["job"]["failed"] == 0
    assert_exact_replica(seaweed, src, dst)
    with sqlite3.connect(manifest) as db:
        rvids = [r[0] for r in db.execute("SELECT rvid FROM version")]
    assert len(rvids) == len(set(rvids)) == total
    assert set(rvids) == {e[3] for v in seaweed.history(dst).values() for e in v}


def test_ctrl_c_finishes_in_flight_copies_and_prints_the_resume_command(seaweed: Store, manifest: str) -> None:
    src, dst = seaweed.buckets()
    total = seed_many(seaweed, src, KEYS)
    args = ["copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--concurrency", "8"]
    p = start_cli(seaweed, *args)
    try:
        _wait_until(lambda: copied_versions(manifest) >= 200 or p.poll() is not None)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert "To resume, run: backfill copy" in err
    # Everything it copied is recorded: nothing is pending in the manifest but what never started.
    copied_then = copied_versions(manifest)
    assert 200 <= copied_then < total
    replica_now = sum(len(v) for v in seaweed.history(dst).values())
    assert replica_now == copied_then, "a graceful stop records every copy it made"

    r = seaweed.run(*args, "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["this_run"]["copied"] == total - copied_then
    assert_exact_replica(seaweed, src, dst)


def test_ctrl_c_while_python_is_still_starting_stops_quietly(seaweed: Store, manifest: str) -> None:
    """Ctrl-C at any moment of the start (imports, set-up, first copies): exit 130, never a traceback."""
    src, _ = seaweed.buckets()
    seed_many(seaweed, src, 300)
    # (Not earlier than 0.2 s: a loaded machine can still be in Python's own start-up, `site` and its .pth
    # files, where no code of backfill runs yet.)
    for delay in (0.2, 0.3, 0.5, 0.9):
        _, dst = seaweed.buckets()  # a fresh replica and manifest each time
        m = f"{manifest}-{delay}"
        p = start_cli(seaweed, "copy", f"s3://{src}", f"s3://{dst}", "--manifest", m, "--concurrency", "4")
        try:
            time.sleep(delay)
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
        # 130, or killed by the SIGINT it re-raised (the shell shows both as 130)
        assert p.returncode in (130, -signal.SIGINT), (delay, p.returncode, err)
        assert "Traceback" not in err, (delay, err)
        if "stopped before anything started" in err:
            assert not os.path.exists(m) and not seaweed.history(dst), delay
        else:
            assert "To resume, run: backfill copy" in err, (delay, err)


def test_copies_the_manifest_missed_are_found_in_the_replica_not_copied_again(seaweed: Store, manifest: str) -> None:
    """The state a crash leaves between a copy and its batched outcome, made on purpose."""
    src, dst = seaweed.buckets()
    c = seaweed.client
    for v in range(4):
        c.put_object(Bucket=src, Key="multi", Body=f"v{v}".encode())
    c.delete_object(Bucket=src, Key="multi")
    for i in range(20):
        c.put_object(Bucket=src, Key=f"single/{i}", Body=b"s")
    args = ["copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest]
    assert seaweed.run(*args).code == 0
    with sqlite3.connect(manifest) as db:
        # The last three entries of "multi" (two versions and the marker) and five single keys:
        # in the replica, but the manifest says pending.
        db.execute("UPDATE version SET state = 0, rvid = NULL WHERE key = 'multi' AND seq >= 2")
        singles = [f"single/{i}" for i in range(5)]
        db.execute("UPDATE version SET state = 0, rvid = NULL WHERE key IN (?, ?, ?, ?, ?)", singles)
    before = seaweed.history(dst)
    r = seaweed.run(*args, "--json")
    assert r.code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["this_run"]["recovered_after_crash"] == 8
    assert s["this_run"]["copied"] == 0
    assert seaweed.history(dst) == before
    with sqlite3.connect(manifest) as db:
        recorded = {r[0] for r in db.execute("SELECT rvid FROM version")}
    assert recorded == {e[3] for v in before.values() for e in v}

    # Had the copy not reached the replica, it is made now (and only once).
    c.delete_object(Bucket=dst, Key="single/0", VersionId=before["single/0"][0][3])
    with sqlite3.connect(manifest) as db:
        db.execute("UPDATE version SET state = 0, rvid = NULL WHERE key = 'single/0'")
    r = seaweed.run(*args, "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["this_run"]["copied"] == 1
    assert_exact_replica(seaweed, src, dst)
