"""Crash-resume torture in CI: 20 SIGKILLs (and 2 Ctrl-Cs) at random moments; nothing lost or duplicated.

The size is CI's: ~1,000 small versions and a dozen 6-12 MiB multipart ones, so
that 22 stops and resumes take about a minute on 2 shared cores. A larger run:
`python -m benchmarks.torture --keys 5000 --kills 50`. The seed can be changed with
BACKFILL_TORTURE_SEED to explore other moments.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

from testbed.store import Store, shape
from testbed.torture import check, seed, torture

KEYS = 1200
BIG = 8
KILLS = 20
SIGINTS = 2
SEED = int(os.environ.get("BACKFILL_TORTURE_SEED", "2026"))


def test_twenty_kills_lose_and_duplicate_nothing(seaweed: Store, manifest: str) -> None:
    src, dst = seaweed.buckets()
    t = time.monotonic()
    seeded = seed(seaweed, src, KEYS, BIG, SEED)
    print(f"seeded {seeded.versions} versions ({seeded.delete_markers} delete markers) in {time.monotonic() - t:.1f} s")
    outcome = torture(
        seaweed, src, dst, manifest, total=seeded.versions, kills=KILLS, sigints=SIGINTS, seed=SEED, log=print
    )
    killed = [s for s in outcome.stops if s.kind != "sigint" and s.exit_code != 0]
    assert len(killed) == KILLS, f"the job finished after {len(killed)} kills: seed more versions"
    assert outcome.count("multipart", hit=True) >= 1, "no kill came during a multipart copy"
    assert outcome.count("write", hit=True) >= 1, "no kill came during a manifest write"
    t = time.monotonic()
    check(seaweed, src, dst, manifest, seeded, outcome)
    print(f"stops and resumes took {outcome.seconds:.1f} s, the checks {time.monotonic() - t:.1f} s")


def test_uploads_a_crash_left_open_are_aborted_and_only_those(seaweed: Store, manifest: str) -> None:
    """The state a kill leaves in a multipart copy, made on purpose: one upload recorded with its ID,
    one recorded before CreateMultipartUpload answered (no ID). Both are aborted by the next run;
    an upload that backfill did not begin is left alone."""
    src, dst = seaweed.buckets()
    c = seaweed.client
    c.put_object(Bucket=src, Key="big", Body=b"B" * (6 * 1024 * 1024))
    c.put_object(Bucket=src, Key="big2", Body=b"C" * (6 * 1024 * 1024))
    args = ["copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--multipart-threshold", "5MiB"]
    assert seaweed.run(*args).code == 0
    for key in ("big", "big2"):  # as if their copies had not happened
        (entry,) = seaweed.history(dst)[key]
        c.delete_object(Bucket=dst, Key=key, VersionId=entry[3])
    started = time.time() - 5
    recorded = c.create_multipart_upload(Bucket=dst, Key="big")["UploadId"]
    c.upload_part_copy(Bucket=dst, Key="big", UploadId=recorded, PartNumber=1, CopySource={"Bucket": src, "Key": "big"})
    unrecorded = c.create_multipart_upload(Bucket=dst, Key="big2")["UploadId"]  # its answer never recorded
    foreign = c.create_multipart_upload(Bucket=dst, Key="someone-elses")["UploadId"]
    with sqlite3.connect(manifest) as db:
        db.execute("UPDATE version SET state = 0, rvid = NULL")
        db.execute("UPDATE job SET value = '1' WHERE name = 'clean'")  # no settling: nothing is in flight
        db.execute("INSERT INTO upload VALUES ('t1', 'big', ?, ?)", (recorded, started))
        db.execute("INSERT INTO upload VALUES ('t2', 'big2', NULL, ?)", (started,))
    r = seaweed.run(*args, "--json")
    assert r.code == 0, r.stderr
    assert "aborted 2 multipart upload(s) that the last run left open in the replica" in r.stderr
    assert json.loads(r.stdout)["this_run"]["copied"] == 2
    open_now = {u["UploadId"] for u in c.list_multipart_uploads(Bucket=dst).get("Uploads", [])}
    assert open_now == {foreign}, (open_now, recorded, unrecorded)
    c.abort_multipart_upload(Bucket=dst, Key="someone-elses", UploadId=foreign)
    with sqlite3.connect(manifest) as db:
        assert db.execute("SELECT count(*) FROM upload").fetchone()[0] == 0
    assert shape(seaweed.history(src), etags=False) == shape(seaweed.history(dst), etags=False)
