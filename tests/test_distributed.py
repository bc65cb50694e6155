"""Multi-shard jobs: a state location, shard leases, Dask, and the indexed launcher (run-shards).

Real servers, real processes: a Dask LocalCluster whose worker dies mid-shard, run-shards
processes one of which is SIGKILLed and restarted. Replicas are compared history by history.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from backfill.distributed.lease import Holder, LeaseLost, ShardSettings, claim
from backfill.distributed.store import (
    Conflict,
    LocalStore,
    S3Store,
    StateAccess,
    check_conditional_writes,
    lease_name,
    open_store,
)
from testbed.faults import Fault
from testbed.proxy import ThreadedProxy
from testbed.seeds import seed_many
from testbed.store import Store, assert_exact_replica, start_cli

_names = itertools.count()
KEYS = 1500  # 1,710 versions and delete markers: more than a listing page, so the bucket is sharded
FAST = ["--lease-seconds", "3", "--settle-seconds", "1"]


def _bucket(store: Store, name: str, *, versioned: bool = True) -> str:
    """One bucket (each SeaweedFS bucket is a collection with volumes of its own: make no spare ones)."""
    bucket = f"shards-{name}-{os.getpid()}-{next(_names)}"  # Store.buckets names its pairs src-/dst-PID-N
    store.client.create_bucket(Bucket=bucket)
    if versioned:
        store.client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


@pytest.fixture(scope="module")
def seeded(seaweed: Store) -> tuple[str, int]:
    """One source bucket for the tests that only read it (seeding takes seconds)."""
    src = _bucket(seaweed, "src")
    return src, seed_many(seaweed, src, KEYS)


@pytest.fixture(scope="module")
def control(seaweed: Store) -> str:
    """A control bucket for s3:// state locations (not versioned)."""
    return _bucket(seaweed, "ctl", versioned=False)


def _copy(store: Store, src: str, dst: str, *args: str, env: dict[str, str] | None = None) -> Any:
    r = store.run("copy", f"s3://{src}", f"s3://{dst}", "--json", *args, env=env)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def _leases(state: Path) -> dict[int, dict[str, Any]]:
    return {int(p.name[:5]): json.loads(p.read_text()) for p in sorted((state / "shards").glob("*.lease"))}


def _shard_file_totals(state: Path) -> dict[str, int]:
    """Version counts by state, summed over the shard files the leases name."""
    out: dict[str, int] = {}
    for lease in _leases(state).values():
        with sqlite3.connect(state / lease["checkpoint"]) as db:
            for st, n in db.execute("SELECT state, count(*) FROM version GROUP BY state"):
                name = ["pending", "copied", "failed", "skipped"][st]
                out[name] = out.get(name, 0) + n
    return out


def _no_duplicate_replica_ids(merged: str, store: Store, dst: str, total: int) -> None:
    with sqlite3.connect(merged) as db:
        rvids = [r[0] for r in db.execute("SELECT rvid FROM version")]
    assert len(rvids) == len(set(rvids)) == total
    assert set(rvids) == {e[3] for v in store.history(dst).values() for e in v}


# --- the state location's conditional writes, on each server ---------------------------


@contextlib.contextmanager
def _credentials_of(store: Store) -> Iterator[None]:
    """The store's credentials in this process's environment (open_store reads them as the CLI does)."""
    env = {k: v for k, v in store.env.items() if k != "AWS_ENDPOINT_URL"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_conditional_writes_on_seaweedfs_and_moto(store: Store) -> None:
    ctl = _bucket(store, "ctl", versioned=False)

    async def main() -> None:
        async with open_store(f"s3://{ctl}/run/", StateAccess(endpoint_url=store.endpoint)) as s:
            assert isinstance(s, S3Store)
            await check_conditional_writes(s)  # both refuse a second create and a stale If-Match
            etag = await s.put("x", b"1", create=True)
            with pytest.raises(Conflict):
                await s.put("x", b"2", create=True)
            new = await s.put("x", b"2", if_match=etag)
            with pytest.raises(Conflict):
                await s.put("x", b"3", if_match=etag)
            got = await s.get("x")
            assert got == (b"2", new)
            with pytest.raises(Conflict):
                await s.put("absent", b"1", if_match=etag)

    with _credentials_of(store):
        anyio.run(main)


def test_a_lease_write_whose_answer_was_lost_is_not_taken_for_a_takeover(seaweed: Store, control: str) -> None:
    """A lease write whose connection drops after the request went out landed: the state store reads the lease
    back before it would send the write again, finds its own bytes, and takes the write as done (no resend, whose
    condition our own first write would refuse). It is our own write, not another attempt's."""
    faults = [Fault("reset_after", 1.0, op="PutObject", limit=4)]  # claim (create), then renewals
    with _credentials_of(seaweed), ThreadedProxy(seaweed.endpoint, faults=faults, seed=3) as proxy:

        async def main() -> None:
            location = f"s3://{control}/lost-answers/"
            async with open_store(location, StateAccess(endpoint_url=proxy.endpoint_url)) as s:
                got = await claim(s, 7, ShardSettings(lease_seconds=30), say=lambda _m: None)
                assert got.holder is not None and got.previous is None
                assert got.holder.lease.generation == 1
                for _ in range(3):
                    await got.holder.write()
                assert not got.holder.lost
                stored = await s.get(lease_name(7))
                assert stored == (got.holder.lease.dump(), got.holder.etag)
                assert isinstance(s, S3Store) and s.pacer.recovered == 4  # the store's own check found them

        anyio.run(main)
        assert proxy.stats.get("reset_after:PutObject") == 4, proxy.stats


@pytest.mark.parametrize(
    ("kind", "landed"),
    [("reset_after", True), ("internal_error", False)],
)
def test_the_state_store_looks_for_a_write_whose_answer_was_lost_before_sending_it_again(
    seaweed: Store, control: str, kind: str, landed: bool
) -> None:
    """reset_after: the server wrote, the connection dropped before the answer; internal_error: a 500, nothing
    written. Either way the answer leaves it unknown whether the write happened; the store reads the object back
    and sends the write again only when it does not hold our bytes: a conditional write is never resent blindly."""
    faults = [Fault(kind, 1.0, op="PutObject", limit=2)]
    with _credentials_of(seaweed), ThreadedProxy(seaweed.endpoint, faults=faults, seed=5) as proxy:

        async def main() -> None:
            async with open_store(f"s3://{control}/lost-{kind}/", StateAccess(endpoint_url=proxy.endpoint_url)) as s:
                assert isinstance(s, S3Store)
                first = await s.put("x", b"one", create=True)
                second = await s.put("x", b"two", if_match=first)
                assert await s.get("x") == (b"two", second)
                assert s.pacer.recovered == (2 if landed else 0)

        anyio.run(main)
        stats = proxy.stats
        assert stats.get(f"{kind}:PutObject") == 2, stats
        assert stats.get("requests:PutObject") == (2 if landed else 4), stats  # landed: never sent twice


def test_a_conditional_write_refused_by_our_own_earlier_one_is_ours(seaweed: Store, control: str) -> None:
    """A write sent again (by a caller that saw only an error) is refused by the first one, which landed: the
    store holds exactly its bytes, so it is ours. A refusal by different bytes stays a Conflict."""

    async def main() -> None:
        async with open_store(f"s3://{control}/refused-by-ours/", StateAccess(endpoint_url=seaweed.endpoint)) as s:
            first = await s.put("x", b"one", create=True)
            assert await s.put("x", b"one", create=True) == first
            with pytest.raises(Conflict):
                await s.put("x", b"other", create=True)
            second = await s.put("x", b"two", if_match=first)
            assert await s.put("x", b"two", if_match=first) == second
            with pytest.raises(Conflict):
                await s.put("x", b"three", if_match=first)
            assert await s.get("x") == (b"two", second)

    with _credentials_of(seaweed):
        anyio.run(main)


# --- the lease protocol, in-process on a local state directory ---------------------------


def test_lease_live_holder_is_waited_for_dead_one_taken_over(tmp_path: Path) -> None:
    settings = ShardSettings(lease_seconds=0.6, checkpoint_seconds=60, settle_seconds=0.2)
    store = LocalStore(tmp_path)
    said: list[str] = []

    async def main() -> None:
        first = await claim(store, 7, settings, said.append)
        assert first.holder is not None and first.previous is None
        h1: Holder = first.holder
        assert h1.lease.generation == 1 and await h1.may_copy()
        await h1.listed(7, [], "k0100", False)
        t = time.monotonic()
        # A live holder (renewing) is never taken over: the claimant waits until it releases.
        claims: list[Any] = []
        renewing = anyio.CancelScope()

        async def renew() -> None:
            with renewing:
                await h1.keep_alive()

        async def claimant() -> None:
            claims.append(await claim(store, 7, settings, said.append))

        async with anyio.create_task_group() as tg:
            tg.start_soon(renew)
            tg.start_soon(claimant)
            await anyio.sleep(1.5)  # 2.5 lease periods
            assert not claims
            renewing.cancel()
            await h1.write(state="released", clean=True, complete=False)
        second = claims[0]
        assert second.holder is not None and second.settle == 0  # released cleanly: nothing to wait for
        h2 = second.holder
        assert h2.lease.generation == 2 and h2.lease.listed_upto == "k0100"
        # The old holder's writes now fail, and it may not copy.
        with pytest.raises(LeaseLost):
            await h1.write()
        assert not await h1.may_copy()
        # A dead holder (no renewals): taken over after lease_seconds, then settle before checking its copies.
        t = time.monotonic()
        third = await claim(store, 7, settings, said.append)
        assert time.monotonic() - t >= settings.lease_seconds
        assert third.holder is not None and third.holder.lease.generation == 3 and third.settle == 0.2
        assert third.previous is not None and third.previous.listed_upto == "k0100"
        with pytest.raises(LeaseLost):
            await h2.write()
        await third.holder.write(state="released", complete=True)
        done = await claim(store, 7, settings, said.append)
        assert done.holder is None  # complete: nothing to do

    anyio.run(main)
    assert any("held by" in s for s in said)
    assert stat.S_IMODE((tmp_path / lease_name(7)).stat().st_mode) == 0o600


# --- copy --state, in this process --------------------------------------------------------


def test_local_state_copy_status_merge_and_verify(seaweed: Store, tmp_path: Path, seeded: tuple[str, int]) -> None:
    dst = _bucket(seaweed, "dst")
    src, total = seeded
    state = tmp_path / "state"
    r = _copy(seaweed, src, dst, "--state", str(state), "--shards", "4", "--concurrency", "16")
    assert r.code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["job"]["copied"] == total and s["job"]["shards"] == 4 == s["job"]["shards_listed"]
    assert_exact_replica(seaweed, src, dst)
    for f in [state / "job.json", *(state / "shards").iterdir()]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert "secret" not in (state / "job.json").read_text().lower()

    # The merged view is the sum of the shard files.
    merged = str(tmp_path / "merged.db")
    r = seaweed.run("status", "--state", str(state), "--merge-to", merged, "--json")
    assert r.code == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["complete"] and st["shards"] == 4
    assert {k: v["count"] for k, v in st["versions"].items()} == _shard_file_totals(state) == {"copied": total}
    assert sum(lease["totals"]["copied"] for lease in _leases(state).values()) == total
    _no_duplicate_replica_ids(merged, seaweed, dst, total)

    r = seaweed.run("verify", f"s3://{src}", f"s3://{dst}", "--state", str(state))
    assert r.code == 0, r.stdout + r.stderr

    # Again: every shard is complete, nothing is copied.
    before = seaweed.history(dst)
    r = _copy(seaweed, src, dst, "--state", str(state))
    assert r.code == 0 and json.loads(r.stdout)["this_run"]["copied"] == 0, r.stderr
    assert seaweed.history(dst) == before


def test_state_mode_refusals(seaweed: Store, tmp_path: Path) -> None:
    src, dst = seaweed.buckets()
    r = seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--state", str(tmp_path), "--manifest", "x.db")
    assert r.code == 2 and r.stderr.count("\n") == 1 and "--manifest" in r.stderr
    r = seaweed.run("run-shards", "--state", str(tmp_path / "nothing"), "--index", "0", "--count", "1")
    assert r.code == 2 and "--plan-only" in r.stderr and r.stderr.count("\n") == 1
    r = seaweed.run("run-shards", "--state", str(tmp_path))
    assert r.code == 2 and "--index" in r.stderr
    # Another job's state is refused.
    other_dst = _bucket(seaweed, "dst")
    seaweed.client.put_object(Bucket=src, Key="a", Body=b"a")
    assert _copy(seaweed, src, dst, "--state", str(tmp_path / "s")).code == 0
    r = _copy(seaweed, src, other_dst, "--state", str(tmp_path / "s"))
    assert r.code == 2 and "another job" in r.stderr
    # Without Dask installed, --engine dask says so in one line.
    block = tmp_path / "nodask" / "distributed"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text("raise ImportError('not installed')\n")
    no_dask = {"PYTHONPATH": str(block.parent)}
    r = _copy(seaweed, src, dst, "--engine", "dask", "--state", str(tmp_path / "s"), env=no_dask)
    assert r.code == 2 and "pip install 'backfill[dask]'" in r.stderr and r.stderr.count("backfill: error") == 1


# --- Dask: a worker dies mid-shard --------------------------------------------------------


def test_dask_worker_killed_mid_shard_is_retried_and_the_replica_is_exact(
    seaweed: Store, tmp_path: Path, seeded: tuple[str, int]
) -> None:
    dst = _bucket(seaweed, "dst")
    src, total = seeded
    state = tmp_path / "state"
    args = ["--state", str(state), "--engine", "dask", "--workers", "2", "--shards", "4", "--concurrency", "16"]
    # The test hook: the first attempt of shard 1 ends its worker process (os._exit) after 100 copies. Its
    # checkpoint interval is long, so the retry starts from nothing and must find those copies in the replica.
    r = _copy(seaweed, src, dst, *args, *FAST, env={"BACKFILL_TEST_DIE_AFTER": "1:100"})
    assert r.code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["job"]["copied"] == total and s["job"]["pending"] == 0 and s["job"]["failed"] == 0
    assert s["this_run"]["recovered_after_crash"] >= 100  # the dead attempt's copies, found, not copied again
    assert "shard 1: held by" in r.stderr and "generation 2 waits" in r.stderr
    leases = _leases(state)
    assert leases[1]["generation"] == 2 and {leases[i]["generation"] for i in (0, 2, 3)} == {1}
    assert_exact_replica(seaweed, src, dst)
    merged = str(tmp_path / "merged.db")
    assert seaweed.run("status", "--state", str(state), "--merge-to", merged).code == 0
    _no_duplicate_replica_ids(merged, seaweed, dst, total)

    before = seaweed.history(dst)
    r = _copy(seaweed, src, dst, *args)
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["this_run"]["copied"] == 0
    assert seaweed.history(dst) == before


# --- run-shards: an indexed job, one member SIGKILLed and restarted; state in S3 ----------


def test_indexed_members_one_killed_and_restarted_on_s3_state(
    seaweed: Store, tmp_path: Path, seeded: tuple[str, int], control: str
) -> None:
    dst = _bucket(seaweed, "dst")
    src, total = seeded
    ctl = control
    state = f"s3://{ctl}/run-1/"
    r = _copy(seaweed, src, dst, "--state", state, "--shards", "6", "--plan-only")
    assert r.code == 0 and "run-shards" in r.stderr, r.stderr

    def lease(shard: int) -> dict[str, Any] | None:
        try:
            body = seaweed.client.get_object(Bucket=ctl, Key=f"run-1/{lease_name(shard)}")["Body"].read()
        except seaweed.client.exceptions.NoSuchKey:
            return None
        return dict(json.loads(body))

    member = [
        "run-shards",
        "--state",
        state,
        "--count",
        "3",
        "--parallel",
        "1",
        "--concurrency",
        "8",
        "--max-rps",
        "150",
        "--checkpoint-seconds",
        "0.3",
        "--json",
        *FAST,
    ]
    procs = {i: start_cli(seaweed, *member, "--index", str(i)) for i in range(3)}
    try:
        # Member 1 runs shards 1 and 4. Kill it once shard 1 has a checkpoint and is still running.
        deadline = time.monotonic() + 60
        while not ((le := lease(1)) and le["state"] == "held" and le["checkpoint"]):
            assert time.monotonic() < deadline and procs[1].poll() is None, "shard 1 never checkpointed"
            time.sleep(0.02)
        procs[1].send_signal(signal.SIGKILL)
        procs[1].communicate()
        for i in (0, 2):
            _, err = procs[i].communicate(timeout=120)
            assert procs[i].returncode == 0, err
        # The restarted member takes shard 1 over once its lease lapses, and runs shard 4.
        procs[1] = start_cli(seaweed, *member, "--index", "1")
        _, err = procs[1].communicate(timeout=120)
        assert procs[1].returncode == 0, err
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert "shard 1: held by" in err
    le1 = lease(1)
    assert le1 is not None and le1["generation"] == 2 and le1["complete"]
    assert_exact_replica(seaweed, src, dst)

    r = seaweed.run("status", "--state", state, "--json", "--merge-to", str(tmp_path / "m.db"))
    assert r.code == 0, r.stderr
    st = json.loads(r.stdout)
    per_shard = [lease(i) for i in range(6)]
    assert st["versions"]["copied"]["count"] == sum(le["totals"]["copied"] for le in per_shard if le) == total
    _no_duplicate_replica_ids(str(tmp_path / "m.db"), seaweed, dst, total)
    # Old generations' checkpoints are gone: one file per shard.
    names = [o["Key"] for o in seaweed.client.list_objects_v2(Bucket=ctl, Prefix="run-1/shards/")["Contents"]]
    assert sum(n.endswith(".db") for n in names) == 6

    # Every member again: nothing to do.
    before = seaweed.history(dst)
    again = [start_cli(seaweed, *member, "--index", str(i)) for i in range(3)]
    for p in again:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and json.loads(out)["this_run"]["copied"] == 0, err
    assert seaweed.history(dst) == before


def test_index_from_the_environment(seaweed: Store, tmp_path: Path) -> None:
    src, dst = seaweed.buckets()
    for i in range(5):
        seaweed.client.put_object(Bucket=src, Key=f"k{i}", Body=b"x")
    state = str(tmp_path / "state")
    assert _copy(seaweed, src, dst, "--state", state, "--plan-only").code == 0
    batch = {"AWS_BATCH_JOB_ARRAY_INDEX": "0", "AWS_BATCH_JOB_ARRAY_SIZE": "1"}
    r = seaweed.run("run-shards", "--state", state, "--json", env=batch)
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["this_run"]["copied"] == 5
    assert "index 0 of 1" in r.stderr
    r = seaweed.run("run-shards", "--state", state, "--count", "2", env={"JOB_COMPLETION_INDEX": "1"})
    assert r.code == 0 and "0 of 1 shards" in r.stderr, r.stderr
