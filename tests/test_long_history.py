"""A key's history longer than the lister holds in memory (pipeline/lister.py, HOLD): spilled to the
manifest as it is listed, written ahead once its end is seen, copied back from there oldest first, a
chunk (CHUNK) at a time. The thresholds are lowered so that 600 versions take that path (the copies of one
key are made one after another: more make a slow test); the 3,000-version variant runs with --thorough."""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest

from backfill.config import RunConfig, S3Url, Side
from backfill.models import KeyJob, Version
from backfill.pipeline import lister
from backfill.pipeline.checkpoint import Checkpoint
from backfill.pipeline.copier import Workers
from backfill.pipeline.runner import run_copy
from testbed.store import Store, shape

pytestmark = pytest.mark.anyio

LONG = "m/long"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _seed(store: Store, bucket: str, entries: int) -> None:
    c = store.client

    def one(i: int) -> None:
        if i % 150 == 149:
            c.delete_object(Bucket=bucket, Key=LONG)  # a delete marker in the middle of the history
        else:
            c.put_object(Bucket=bucket, Key=LONG, Body=f"v{i}".encode())

    with ThreadPoolExecutor(16) as pool:  # the server orders them; the replica must match that order
        list(pool.map(one, range(entries)))
    for key in ("a/before", "z/after"):
        for v in range(3):
            c.put_object(Bucket=bucket, Key=key, Body=f"{key} {v}".encode())


# (versions and delete markers of LONG, HOLD, CHUNK); HOLD below a listing page (1,000): pieces end inside a page
@pytest.mark.parametrize(("entries", "hold", "chunk"), [(600, 150, 100), (3000, 1000, 400)], ids=["600", "3000"])
async def test_a_long_history_is_spilled_and_copied_oldest_first_in_chunks(
    seaweed: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entries: int, hold: int, chunk: int
) -> None:
    for k, v in seaweed.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(lister, "HOLD", hold)
    monkeypatch.setattr(lister, "CHUNK", chunk)
    src, dst = seaweed.buckets()
    await anyio.to_thread.run_sync(_seed, seaweed, src, entries)

    spilled: list[int] = []  # versions per spill
    jobs: list[tuple[str, int]] = []  # (key, versions) of every job a copier got
    spill, copy_key = Checkpoint.spill, Workers.copy_key

    async def counting_spill(self: Checkpoint, shard: int, versions: list[Version], first: int, last: bool) -> None:
        spilled.append(len(versions))
        await spill(self, shard, versions, first, last)

    chunks: list[KeyJob] = []

    async def counting_copy(self: Workers, job: KeyJob) -> None:
        jobs.append((job.key, len(job.items)))
        if job.finished is not None:
            chunks.append(job)
        await copy_key(self, job)

    monkeypatch.setattr(Checkpoint, "spill", counting_spill)
    monkeypatch.setattr(Workers, "copy_key", counting_copy)
    manifest = str(tmp_path / "m.db")
    cfg = RunConfig(
        source=Side(S3Url(src, ""), endpoint_url=seaweed.endpoint),
        dest=Side(S3Url(dst, ""), endpoint_url=seaweed.endpoint),
        manifest=manifest,
        concurrency=16,
    )
    result = await run_copy(cfg)
    assert result.totals["copied"] == entries + 6 and result.totals["pending"] == 0, result.totals

    # The long key never had more than HOLD versions in one piece, nor more than CHUNK
    # in one job; every one of its versions went through the spill once.
    assert sum(spilled) == entries and max(spilled) <= hold, spilled
    long_jobs = [n for key, n in jobs if key == LONG]
    assert len(long_jobs) == -(-entries // chunk) and max(long_jobs) == chunk, long_jobs
    # A copier keeps a reference to the last job it did while it waits for the next: a chunk is emptied once
    # done, or up to --concurrency chunks would stay in memory (found with tracemalloc at 100,000 versions).
    assert len(chunks) == len(long_jobs) and all(not j.items and not j.known for j in chunks)

    # The replica's history is the source's, entry for entry, delete markers in place.
    src_h, dst_h = seaweed.history(src), seaweed.history(dst)
    assert len(dst_h[LONG]) == entries
    assert shape(src_h) == shape(dst_h)
    # The manifest has the history oldest first (seq 0 the oldest), each source version once.
    with sqlite3.connect(manifest) as db:
        rows = db.execute("SELECT vid FROM version WHERE key = ? ORDER BY seq", (LONG,)).fetchall()
    assert [r[0] for r in rows] == [e[3] for e in src_h[LONG]]

    # Run again: nothing left to copy.
    again = await run_copy(cfg)
    assert again.counters.copied == 0 and again.totals["copied"] == entries + 6
    assert json.dumps(shape(seaweed.history(dst))) == json.dumps(shape(dst_h))
