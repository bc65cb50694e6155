"""Riding out outages: the S3 server killed with SIGKILL for 5–20 s and started again on the same
ports and data (testbed.outage), while listing, while copying, during multipart copies, and at
random moments.

What it stands for: an endpoint that stops answering as a whole (a VPN link that drops, Wi-Fi
lost, a restarted gateway): every request is refused or times out, not one object's error. The
run pauses instead of failing versions, says "endpoint unreachable since …, retrying", carries on
by itself when the endpoint is back, and ends exit 0 with every history exact, none failed, none
duplicated. Past --outage-timeout it stops like Ctrl-C (manifest flushed, exit 2, the resume
command printed), and the resume completes.

A request in flight when the server dies may or may not have been carried out: S3 may finish a
request whose client has gone (aws/aws-sdk-go-v2#712: a CopyObject that timed out on the client
had landed) or stop it (aws/aws-sdk-js#3198: "S3 might stop the request on detection of client
disconnect"). A copy that lost its answer is looked for in the replica before it is sent again.

Kept small for CI (a few outages per run); benchmarks/outages.py runs the random test many times
and measures what an outage costs (seconds from the endpoint's return to the next copy).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backfill.seaweed import seaweed_server
from testbed.outage import Outage, Outages, copied_at_least, listing_started, random_plan, upload_open, wait_until
from testbed.seeds import seed_many
from testbed.store import Run, Store, assert_exact_replica, copied_versions, shape, start_cli
from testbed.tls import HTTP_PATHS, LocalCA, TlsBed, plain_store, tls_store

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBed]:
    """A SeaweedFS of this module's own (its tests kill it), serving HTTP and HTTPS."""
    root = tmp_path_factory.mktemp("outage")
    ca = LocalCA.create(root / "ca")
    with seaweed_server(root / "seaweed", tls=ca.server) as server:
        yield TlsBed(server, ca, tls_store(server.info, ca), plain_store(server.info))


def _store(bed: TlsBed, scheme: str) -> Store:
    return bed.https if scheme == "https" else bed.plain


def _copy(store: Store, src: str, dst: str, manifest: str, http: str, *extra: str) -> Run:
    return store.run(
        "copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json", "--http", http,
        "--concurrency", "16", "--shards", "4", *extra, timeout=400,
    )  # fmt: skip


def _assert_complete(bed: TlsBed, r: Run, src: str, dst: str, manifest: str, total: int, *, etags: bool = True) -> None:
    assert r.code == 0, r.stderr
    assert "Traceback" not in r.stderr
    job = json.loads(r.stdout)["job"]
    assert job["copied"] == total and job["failed"] == 0 and job["pending"] == 0, job
    if etags:
        assert_exact_replica(bed.plain, src, dst)
    else:  # SeaweedFS gives a multipart copy an ETag of its own (TESTBED.md): compare sizes and order
        source, replica = bed.plain.history(src), bed.plain.history(dst)
        assert shape(source, etags=False) == shape(replica, etags=False)
    with sqlite3.connect(manifest) as db:
        failed = db.execute("SELECT count(*) FROM version WHERE state = 2").fetchone()[0]
        rvids = [row[0] for row in db.execute("SELECT rvid FROM version")]
    assert failed == 0
    assert len(rvids) == len(set(rvids)) == total  # no replica version recorded twice


def _assert_fired(o: Outages) -> None:
    assert o.log and all(h.fired for h in o.log), f"an outage never happened: {o.log}"


@pytest.mark.parametrize("http", HTTP_PATHS)
def test_outage_while_listing_pauses_and_carries_on(bed: TlsBed, manifest: str, http: str) -> None:
    s = bed.plain
    src, dst = s.buckets()
    total = seed_many(s, src, 1500)
    with Outages(bed.server, [Outage(listing_started(manifest), seconds=6)], manifest=manifest) as o:
        r = _copy(s, src, dst, manifest, http)
    _assert_fired(o)
    assert "unreachable since" in r.stderr, r.stderr
    _assert_complete(bed, r, src, dst, manifest, total)


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("http", HTTP_PATHS)
def test_outage_while_copying_pauses_and_carries_on(bed: TlsBed, manifest: str, http: str, scheme: str) -> None:
    s = _store(bed, scheme)
    src, dst = s.buckets()
    total = seed_many(bed.plain, src, 1500)
    with Outages(bed.server, [Outage(copied_at_least(manifest, 300), seconds=6)], manifest=manifest) as o:
        r = _copy(s, src, dst, manifest, http)
    _assert_fired(o)
    assert "unreachable since" in r.stderr, r.stderr
    _assert_complete(bed, r, src, dst, manifest, total)


@pytest.mark.parametrize("http", HTTP_PATHS)
def test_outage_during_multipart_copies(bed: TlsBed, manifest: str, http: str) -> None:
    s = bed.plain
    src, dst = s.buckets()
    for i in range(6):
        s.client.put_object(Bucket=src, Key=f"big/{i}", Body=bytes([65 + i]) * (6 * MiB))
    total = 6 + seed_many(s, src, 200)
    plan = [Outage(upload_open(manifest), seconds=5)]
    with Outages(bed.server, plan, manifest=manifest) as o:
        r = _copy(s, src, dst, manifest, http, "--multipart-threshold", "5MiB", "--part-size", "5MiB")
    _assert_fired(o)
    _assert_complete(bed, r, src, dst, manifest, total, etags=False)


# CI runs a few outages per run; BACKFILL_OUTAGE_SEEDS="1 2 3 …" (or benchmarks/outages.py) runs more.
SEEDS = [int(x) for x in os.environ.get("BACKFILL_OUTAGE_SEEDS", "1").split()]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("http", HTTP_PATHS)
def test_outages_at_random_moments(bed: TlsBed, manifest: str, http: str, seed: int) -> None:
    s = bed.plain
    src, dst = s.buckets()
    total = seed_many(s, src, 2000)
    rng = random.Random(seed)
    plan = [Outage(listing_started(manifest), rng.uniform(5, 8))]  # the first while the shards are listed
    plan += random_plan(rng, manifest, total, 2, (5, 8))
    with Outages(bed.server, plan, manifest=manifest) as o:
        r = _copy(s, src, dst, manifest, http)
    _assert_fired(o)
    _assert_complete(bed, r, src, dst, manifest, total)


@pytest.mark.parametrize("http", HTTP_PATHS)
def test_past_the_outage_timeout_it_stops_like_ctrl_c_and_the_resume_completes(
    bed: TlsBed, manifest: str, http: str, tmp_path: Path
) -> None:
    s = bed.plain
    src, dst = s.buckets()
    total = seed_many(s, src, 1500)
    with Outages(bed.server, [Outage(copied_at_least(manifest, 300), seconds=14)]) as o:
        r = _copy(s, src, dst, manifest, http, "--outage-timeout", "4")
        o.wait()
    _assert_fired(o)
    assert r.code == 2, (r.code, r.stderr)
    assert "Traceback" not in r.stderr
    assert "--outage-timeout" in r.stderr and "To resume, run: backfill copy" in r.stderr, r.stderr
    with sqlite3.connect(manifest) as db:
        states = dict(db.execute("SELECT state, count(*) FROM version GROUP BY state").fetchall())
        clean = db.execute("SELECT value FROM job WHERE name = 'clean'").fetchone()
    assert states.get(2, 0) == 0, "an outage failed versions"
    assert states.get(1, 0) >= 300, "the copies made before the outage were not recorded"
    assert clean is not None
    r = _copy(s, src, dst, manifest, http)
    _assert_complete(bed, r, src, dst, manifest, total)


@pytest.mark.parametrize("http", HTTP_PATHS)
def test_a_stopped_process_longer_than_the_read_timeout_goes_on(bed: TlsBed, manifest: str, http: str) -> None:
    """Laptop sleep, as far as a container can show it: the process is stopped (SIGSTOP) for longer
    than --read-timeout while requests are in flight, three times, then continued (SIGCONT). Unlike
    a real suspend the clocks and the server go on meanwhile, so every request in flight looks
    silent for too long on waking: each is retried (a write looked for in the replica first), and
    the run ends exact, with nothing failed."""
    s = bed.plain
    src, dst = s.buckets()
    total = seed_many(s, src, 1500)
    args = ["copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json", "--http", http]
    p = start_cli(s, *args, "--concurrency", "16", "--read-timeout", "2", "--max-rps", "300")
    try:
        for threshold in (200, 500, 800):
            wait_until(lambda t=threshold: copied_versions(manifest) >= t or p.poll() is not None)  # type: ignore[misc]
            assert p.poll() is None, "the copy ended before it could be stopped: seed more keys"
            p.send_signal(signal.SIGSTOP)
            time.sleep(5)
            p.send_signal(signal.SIGCONT)
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    r = Run(p.returncode, out, err)
    _assert_complete(bed, r, src, dst, manifest, total)
