"""Outages of the state location of a distributed run: `run-shards` workers (and `copy --state`) whose
s3:// state location, on the same SeaweedFS as the buckets (the replica's endpoint and profile
reach it), is killed with SIGKILL mid-run and started again on the same ports and data
(testbed.outage, as tests/test_outage.py does for a single-machine copy).

What it stands for: the state location's endpoint stops answering as a whole (a VPN link that
drops, a restarted gateway). The workers pause (pacing.EndpointHealth, shared with the copy's:
one line, one probe), carry on when it is back, and the lease protocol stays correct: the
outage is longer than the lease, so every lease lapses meanwhile (copies wait) and is
re-validated by a conditional renewal before copying goes on (distributed.lease). Past
--outage-timeout a worker stops like Ctrl-C: exit 2, one line, the resume command; the resume
takes the shards over and completes. Histories exact, nothing failed, nothing copied twice.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill.seaweed import Server, seaweed_server
from testbed.outage import Outage, Outages
from testbed.seeds import seed_many
from testbed.store import Run, Store, assert_exact_replica, start_cli
from testbed.tls import plain_store

FAST = ["--lease-seconds", "2", "--settle-seconds", "1", "--checkpoint-seconds", "0.5"]


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Store]]:
    """A SeaweedFS of this module's own (its tests kill it), holding the buckets and the state location."""
    with seaweed_server(tmp_path_factory.mktemp("state-outage")) as server:
        yield server, plain_store(server.info)


def _lease_checkpointed(store: Store, ctl: str, prefix: str) -> Any:
    """A trigger: some shard's lease names a checkpoint while it is held (copying is under way)."""

    def fired() -> bool:
        try:
            r = store.client.list_objects_v2(Bucket=ctl, Prefix=f"{prefix}shards/")
            for o in r.get("Contents", []):
                if o["Key"].endswith(".lease"):
                    lease = json.loads(store.client.get_object(Bucket=ctl, Key=o["Key"])["Body"].read())
                    if lease["state"] == "held" and lease["checkpoint"]:
                        return True
        except Exception:  # the server is starting or busy: look again
            return False
        return False

    return fired


def _setup(store: Store, keys: int) -> tuple[str, str, str, int]:
    src, dst = store.buckets()
    ctl, _ = store.buckets(versioned=False, dest_versioned=False)
    return src, dst, ctl, seed_many(store, src, keys)


def _assert_job_exact(store: Store, tmp_path: Path, src: str, dst: str, state: str, total: int) -> None:
    assert_exact_replica(store, src, dst)
    merged = tmp_path / "merged.db"
    r = store.run("status", "--state", state, "--json", "--merge-to", str(merged))
    assert r.code == 0, r.stderr
    with sqlite3.connect(merged) as db:
        states = dict(db.execute("SELECT state, count(*) FROM version GROUP BY state").fetchall())
        rvids = [row[0] for row in db.execute("SELECT rvid FROM version")]
    assert states.get(2, 0) == 0 and states.get(0, 0) == 0, states
    assert len(rvids) == len(set(rvids)) == total  # no replica version recorded twice
    assert set(rvids) == {e[3] for v in store.history(dst).values() for e in v}


def test_workers_pause_while_the_state_location_is_down_and_carry_on(bed: tuple[Server, Store], tmp_path: Path) -> None:
    server, s = bed
    src, dst, ctl, total = _setup(s, 500)
    state = f"s3://{ctl}/run/"
    r = s.run("copy", f"s3://{src}", f"s3://{dst}", "--state", state, "--shards", "4", "--plan-only")
    assert r.code == 0, r.stderr
    member = ["run-shards", "--state", state, "--count", "2", "--parallel", "2", "--concurrency", "8"]
    member += ["--max-rps", "100", "--json", *FAST]
    with Outages(server, [Outage(_lease_checkpointed(s, ctl, "run/"), seconds=6)]) as o:
        procs = [start_cli(s, *member, "--index", str(i)) for i in range(2)]
        runs = []
        for p in procs:
            out, err = p.communicate(timeout=240)
            runs.append(Run(p.returncode, out, err))
    assert o.log and o.log[0].fired, o.log
    for r in runs:
        assert r.code == 0, r.stderr
        assert "Traceback" not in r.stderr
    # At least one worker was mid-shard when the server went: it paused and said so.
    assert any("unreachable since" in r.stderr and "reachable again" in r.stderr for r in runs), runs
    copied = sum(json.loads(r.stdout)["this_run"]["copied"] for r in runs)
    assert copied == total
    # The outage outlasted the leases (2 s): each was re-validated by its holder's renewal, not taken over.
    names = [o["Key"] for o in s.client.list_objects_v2(Bucket=ctl, Prefix="run/shards/")["Contents"]]
    leases = [json.loads(s.client.get_object(Bucket=ctl, Key=n)["Body"].read()) for n in names if n.endswith(".lease")]
    assert leases and all((le["generation"], le["complete"]) == (1, True) for le in leases), leases
    _assert_job_exact(s, tmp_path, src, dst, state, total)


def test_past_the_outage_timeout_a_state_run_stops_like_ctrl_c_and_the_resume_completes(
    bed: tuple[Server, Store], tmp_path: Path
) -> None:
    server, s = bed
    src, dst, ctl, total = _setup(s, 500)
    state = f"s3://{ctl}/run/"
    args = ["copy", f"s3://{src}", f"s3://{dst}", "--state", state, "--shards", "4", "--json"]
    args += ["--concurrency", "8", "--max-rps", "100", *FAST]
    with Outages(server, [Outage(_lease_checkpointed(s, ctl, "run/"), seconds=10)]) as o:
        p = start_cli(s, *args, "--outage-timeout", "3")
        _, err = p.communicate(timeout=240)
        o.wait()
    assert o.log and o.log[0].fired, o.log
    assert p.returncode == 2, (p.returncode, err)
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("backfill: error:")]
    assert len(errors) == 1 and "--outage-timeout" in errors[0], err
    assert "To resume, run: backfill copy" in err, err
    # The resume takes every shard over (their leases lapse: no one renews them) and completes.
    r = s.run(*args)
    assert r.code == 0, r.stderr
    assert "Traceback" not in r.stderr
    _assert_job_exact(s, tmp_path, src, dst, state, total)
