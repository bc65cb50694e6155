"""Contracts between the pipeline's stages, each tested on its own (the end-to-end tests cover them together).

- key_pages (pipeline/lister.py): listing pages → complete key histories, wherever a page ends.
- key_job (pipeline/lister.py): which part of a key's history a job copies (filters, --versions latest).
- the checkpoint writer (pipeline/checkpoint.py): how outcomes are batched into transactions.
- reconcile (pipeline/copier.py): which replica versions are taken as earlier copies of which source versions.
- Manifest.merge_from / snapshot_to (manifest.py): shard files merged by column name, the upload table too.

Real objects throughout: a SeaweedFS bucket where one is needed, real SQLite files.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from backfill.config import CopyOptions, Filters, RunConfig, S3Url, Side
from backfill.manifest import Manifest
from backfill.models import Item, KeyJob, Shard, State, Version
from backfill.pipeline import checkpoint as checkpoint_module
from backfill.pipeline.checkpoint import Checkpoint
from backfill.pipeline.copier import Workers
from backfill.pipeline.lister import key_job, key_pages
from backfill.pipeline.sides import Sides, open_sides
from backfill.progress import Counters
from backfill.s3 import Bucket, Copier
from testbed.store import Store

pytestmark = pytest.mark.anyio

IDENTITY = {"source": "s3://a", "dest": "s3://b"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sides_env(seaweed: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    for k, v in seaweed.env.items():
        monkeypatch.setenv(k, v)
    return seaweed


def _cfg(store: Store, src: str, dst: str, tmp: Path) -> RunConfig:
    def side(b: str) -> Side:
        return Side(S3Url(b, ""), endpoint_url=store.endpoint)

    return RunConfig(source=side(src), dest=side(dst), manifest=str(tmp / "m.db"), concurrency=8)


def _put(store: Store, bucket: str, key: str, body: bytes) -> str:
    return str(store.client.put_object(Bucket=bucket, Key=key, Body=body)["VersionId"])


# --- key_pages ---------------------------------------------------------------------------------

# Keys in S3 order, with their number of versions; "b" and "d" have histories long enough that a
# page boundary falls inside them for many page sizes; "c" is a delete marker on top of a version.
LAYOUT = {"a": 1, "b": 4, "c": 2, "d": 5, "e": 1, "f": 2}


def _populate(store: Store, bucket: str) -> dict[str, list[str]]:
    """LAYOUT written into `bucket`: key → version IDs, newest first (as listed)."""
    out: dict[str, list[str]] = {}
    for key, n in LAYOUT.items():
        ids = [_put(store, bucket, key, f"{key}{i}".encode()) for i in range(n - (key == "c"))]
        if key == "c":
            ids.append(str(store.client.delete_object(Bucket=bucket, Key=key)["VersionId"]))
        out[key] = ids[::-1]
    return out


async def _collect(bucket: Bucket, after: str | None, upto: str | None, first_page: int) -> list[Any]:
    pages = []
    async for complete, done in key_pages(bucket, "", after, upto, first_page=first_page):
        pages.append(([[(v.key, v.version_id) for v in h] for h in complete], done))
    return pages


async def test_key_pages_yield_each_key_once_complete_wherever_a_page_ends(sides_env: Store, tmp_path: Path) -> None:
    """Contract: whatever the page size (so wherever a page boundary falls — between keys, inside a
    key's history, on its last version), key_pages yields every key of (after, upto] exactly once,
    in key order, with its whole history newest first; a key whose versions straddle pages is held
    back to the page that completes it; the last yield says done, and only the last."""
    store = sides_env
    src, dst = store.buckets()
    want = _populate(store, src)
    total = sum(LAYOUT.values())
    async with open_sides(_cfg(store, src, dst, tmp_path)) as sides:
        sides.src.drop_prefetched()  # the preflight's first page (PREFETCH_ENTRIES) would answer the first listings
        # The first page's size moves the boundary over every position of the listing (later pages are
        # 1000 entries: the rest of it).
        for first_page in range(1, total + 1):
            pages = await _collect(sides.src, None, None, first_page)
            keys = [h for complete, _ in pages for h in complete]
            assert [h[0][0] for h in keys] == list(LAYOUT), first_page
            for h in keys:
                assert [vid for _, vid in h] == want[h[0][0]], (first_page, h)
            assert [done for _, done in pages] == [False] * (len(pages) - 1) + [True], first_page
            if first_page < total:
                # The first page hands on exactly the keys that a later entry of the same page shows to be
                # complete (a key ending on the page's last entry may go on in the next page: held back);
                # a page that completes no key yields nothing.
                ends = dict(zip(LAYOUT, itertools.accumulate(LAYOUT.values()), strict=True))
                first = [k for k, end in ends.items() if end < first_page]
                if first:
                    assert [[h[0][0] for h in c] for c, _ in pages] == [first, [k for k in LAYOUT if k not in first]]
                else:
                    assert len(pages) == 1, first_page


async def _listed(bucket: Bucket, after: str | None, upto: str | None, reuse: str) -> list[tuple[str, str]]:
    out = []
    async for complete, _done in key_pages(bucket, "", after, upto, first_page=100, reuse=reuse):
        out += [(v.key, v.version_id) for h in complete for v in h]
    return out


async def test_the_preflights_first_page_answers_a_shards_first_listing_from_inside_it(
    sides_env: Store, tmp_path: Path
) -> None:
    """Contract: the preflight's first version page (kept by the source bucket) answers the first listing of
    any shard that starts inside it (reuse="within"), with exactly the keys of (after, upto] a listing of S3
    gives, and without a request; a listing that must see the bucket as it is now (reuse="never": live
    replication's check after the copies) always asks S3, and sees a version written since."""
    store = sides_env
    src, dst = store.buckets()
    _populate(store, src)
    async with open_sides(_cfg(store, src, dst, tmp_path)) as sides:
        bucket = sides.src
        await bucket.prefetch_versions("")
        for after in (None, *LAYOUT):
            for upto in (None, "d"):
                sent = bucket.list_calls
                got = await _listed(bucket, after, upto, "within")
                assert bucket.list_calls == sent, (after, upto)  # the kept page answered
                assert got == await _listed(bucket, after, upto, "never"), (after, upto)
                assert bucket.list_calls > sent
        new = _put(store, src, "e", b"written after the preflight")
        assert ("e", new) not in await _listed(bucket, "d", None, "within")  # the page as the preflight saw it
        assert ("e", new) in await _listed(bucket, "d", None, "never")


async def test_key_pages_range_is_after_exclusive_upto_inclusive(sides_env: Store, tmp_path: Path) -> None:
    """Contract: the shard (after, upto]: a key equal to `after` is not listed, one equal to `upto` is,
    with all its versions, also when a page boundary falls inside it."""
    store = sides_env
    src, dst = store.buckets()
    want = _populate(store, src)
    async with open_sides(_cfg(store, src, dst, tmp_path)) as sides:
        for first_page in (1, 2, 3, 7, 1000):
            pages = await _collect(sides.src, "b", "d", first_page)
            keys = [h for complete, _ in pages for h in complete]
            assert [h[0][0] for h in keys] == ["c", "d"], first_page
            assert [vid for _, vid in keys[1]] == want["d"]
            assert pages[-1][1] is True
        # Open bounds: everything; an `after` past the last key: nothing, and done.
        assert [h[0][0] for c, _ in await _collect(sides.src, None, "a", 1) for h in c] == ["a"]
        assert await _collect(sides.src, "f", None, 1) == [([], True)]


def _v(key: str, vid: str, when: str, *, dm: bool = False, size: int = 1) -> Version:
    return Version(key, vid, 0 if dm else size, "" if dm else "e" * 32, when, dm)


def test_key_job_selects_by_filters_relative_to_the_prefix_and_numbers_what_is_left() -> None:
    """Contract of key_job: include/exclude globs match the key without the source prefix; with
    --modified-before only versions older than the cutoff are kept, and seq numbers what is kept,
    oldest = 0; --versions latest keeps the newest only, and nothing when it is a delete marker."""
    newest_first = [
        _v("p/k.txt", "v3", "2024-03-01T00:00:00Z", dm=True),
        _v("p/k.txt", "v2", "2024-02-01T00:00:00Z"),
        _v("p/k.txt", "v1", "2024-01-01T00:00:00Z"),
    ]
    every = key_job(1, newest_first, src_prefix="p/", latest_only=False, filters=Filters())
    assert every is not None
    assert [(it.seq, it.version.version_id) for it in every.items] == [(0, "v1"), (1, "v2"), (2, "v3")]
    assert every.shard == 1 and every.key == "p/k.txt" and not every.recheck
    assert key_job(1, newest_first, src_prefix="p/", latest_only=False, filters=Filters(include=("k.*",)))
    assert key_job(1, newest_first, src_prefix="p/", latest_only=False, filters=Filters(include=("p/k.*",))) is None
    assert key_job(1, newest_first, src_prefix="p/", latest_only=False, filters=Filters(exclude=("*.txt",))) is None
    cutoff = datetime(2024, 2, 15, tzinfo=UTC)
    older = key_job(1, newest_first, src_prefix="p/", latest_only=False, filters=Filters(modified_before=cutoff))
    assert older is not None
    assert [(it.seq, it.version.version_id) for it in older.items] == [(0, "v1"), (1, "v2")]
    assert key_job(1, newest_first, src_prefix="p/", latest_only=True, filters=Filters()) is None  # deleted
    latest = key_job(1, newest_first[1:], src_prefix="p/", latest_only=True, filters=Filters())
    assert latest is not None and [it.version.version_id for it in latest.items] == ["v2"]
    early = datetime(2023, 1, 1, tzinfo=UTC)
    assert key_job(1, newest_first, src_prefix="p/", latest_only=False, filters=Filters(modified_before=early)) is None


# --- the checkpoint writer ---------------------------------------------------------------------


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[tuple[Manifest, list[list[str]]]]:
    """A real manifest with one shard and 200 listed versions; every transaction's statements, traced."""
    m = Manifest.open(str(tmp_path / "m.db"), IDENTITY, create=True)
    m.save_shards([Shard(0, "", None, None)])
    job = KeyJob(0, "k", [Item(i, Version("k", f"v{i}", 1, "e", "t")) for i in range(200)])
    with m.transaction() as c:
        Manifest.write_listed(c, [job], 0, "k", True)
    transactions: list[list[str]] = []

    def trace(stmt: str) -> None:
        if stmt.startswith("BEGIN"):
            transactions.append([])
        elif transactions and not stmt.startswith(("COMMIT", "ROLLBACK")):
            transactions[-1].append(stmt)

    m.conn.set_trace_callback(trace)
    yield m, transactions
    m.conn.set_trace_callback(None)
    m.close()


def _outcome_rows(tx: list[str]) -> int:
    return sum(s.startswith("UPDATE version") for s in tx)


async def _write(m: Manifest, send: Any) -> None:
    cp = Checkpoint(m)
    async with anyio.create_task_group() as tg:
        tg.start_soon(cp.run)
        await send(cp)
        await cp.close()


async def test_checkpoint_puts_at_most_max_batch_rows_in_a_transaction(
    traced: tuple[Manifest, list[list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Contract: a transaction holds at most MAX_BATCH messages; a burst fills each one up to it."""
    m, transactions = traced
    monkeypatch.setattr(checkpoint_module, "MAX_BATCH", 10)

    async def burst(cp: Checkpoint) -> None:
        for i in range(95):
            await cp.outcome("k", i, State.COPIED, f"r{i}")

    await _write(m, burst)
    rows = [_outcome_rows(tx) for tx in transactions]
    assert sum(rows) == 95
    assert max(rows) <= 10, rows
    assert len(rows) == 10, rows  # ⌈95/10⌉: the burst filled every transaction but the last
    assert m.versions_of("k")["v94"] == ("copied", "r94", "")


async def test_checkpoint_outcomes_wait_to_share_a_transaction_and_a_page_does_not(
    traced: tuple[Manifest, list[list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Contract: outcomes may wait (up to MAX_DELAY) to share a transaction; a listed page (a lister
    waits for it) is committed at once, with the outcomes that queued before it."""
    m, transactions = traced
    monkeypatch.setattr(checkpoint_module, "MAX_DELAY", 3600.0)  # outcomes alone would wait an hour

    async def mixed(cp: Checkpoint) -> None:
        for i in range(50):
            await cp.outcome("k", i, State.COPIED, f"r{i}")
        page = KeyJob(0, "l", [Item(0, Version("l", "w0", 1, "e", "t"))])
        with anyio.fail_after(60):  # not an hour: the page does not wait for more outcomes
            await cp.listed(0, [page], "l", True)

    await _write(m, mixed)
    assert len(transactions) == 1, [len(t) for t in transactions]
    assert _outcome_rows(transactions[0]) == 50
    assert any(s.startswith("INSERT INTO version") for s in transactions[0])
    assert m.versions_of("l") == {"w0": ("pending", "", "")}


async def test_checkpoint_commits_lone_outcomes_without_waiting_for_a_full_batch(
    traced: tuple[Manifest, list[list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Contract: an outcome is committed after at most MAX_DELAY even when no more messages come."""
    m, transactions = traced
    monkeypatch.setattr(checkpoint_module, "MAX_DELAY", 0.05)
    cp = Checkpoint(m)
    async with anyio.create_task_group() as tg:
        tg.start_soon(cp.run)
        await cp.outcome("k", 0, State.COPIED, "r0")
        with anyio.fail_after(60), sqlite3.connect(f"file:{m.path}?mode=ro", uri=True) as reader:
            while not reader.execute("SELECT count(*) FROM version WHERE state = 1").fetchone()[0]:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        assert len(transactions) == 1
        await cp.close()


async def test_checkpoint_fsyncs_what_is_written_ahead_and_not_outcomes_alone(
    traced: tuple[Manifest, list[list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Contract: a transaction holding a page (written ahead: copies start once it is committed) is durable
    (synchronous=FULL); one of outcomes alone is not (NORMAL: a power cut may lose it, and the versions stay
    pending, which the next run checks against the replica before it copies them)."""
    m, _ = traced
    statements: list[str] = []
    m.conn.set_trace_callback(statements.append)
    monkeypatch.setattr(checkpoint_module, "MAX_DELAY", 0.01)

    async def mixed(cp: Checkpoint) -> None:
        for i in range(3):
            await cp.outcome("k", i, State.COPIED, f"r{i}")
            await anyio.sleep(0.2)  # the outcome's transaction, alone
            page = KeyJob(0, f"l{i}", [Item(0, Version(f"l{i}", "w0", 1, "e", "t"))])
            await cp.listed(0, [page], f"l{i}", i == 2)

    await _write(m, mixed)
    mode, modes = "FULL", []  # as opened; then the mode each transaction committed under, and what it wrote
    for stmt in statements:
        if stmt.startswith("PRAGMA synchronous="):
            mode = stmt.split("=")[1]
        elif stmt.startswith(("UPDATE version", "INSERT INTO version")):
            modes.append((mode, stmt.split()[0]))
    assert sorted(set(modes)) == [("FULL", "INSERT"), ("NORMAL", "UPDATE")], modes
    assert m.versions_of("k")["v2"] == ("copied", "r2", "")


# --- reconcile ---------------------------------------------------------------------------------


def _md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


def _src(key: str, vid: str, body: bytes | None, *, etag: str | None = None) -> Version:
    """A source version as the lister saw it (None: a delete marker)."""
    if body is None:
        return Version(key, vid, 0, "", "2024-01-01T00:00:00Z", True)
    return Version(key, vid, len(body), etag if etag is not None else _md5(body), "2024-01-01T00:00:00Z")


async def _reconcile(
    sides: Sides, key: str, versions: list[Version], known: frozenset[str], first_run: datetime | None
) -> tuple[list[str], int]:
    """Reconcile one key's job against the replica: the replica version taken for each source version."""
    job = KeyJob(0, key, [Item(i, v) for i, v in enumerate(versions)], recheck=True, known=known)
    counters = Counters()
    cp = Checkpoint(None)  # a dry run's: records nothing
    copier = Copier(sides.src, sides.dst, CopyOptions(), False)
    w = Workers(copier, cp, counters, anyio.Event(), "", "", first_run)
    async with anyio.create_task_group() as tg:
        tg.start_soon(cp.run)
        await w.reconcile(job, key)
        await cp.close()
    for it in job.items:
        assert (it.state is State.COPIED) == bool(it.replica_version_id)
    return [it.replica_version_id for it in job.items], counters.recovered


async def test_reconcile_takes_the_unknown_tail_of_the_replica_in_order(sides_env: Store, tmp_path: Path) -> None:
    """Contract: the replica versions after the last one the manifest knows (`known`) are matched,
    oldest first, against the job's unfinished versions, oldest first; the match stops at the first
    pair that differs (kind, size, plain-MD5 ETag). Other keys (here "k0", "k/x") do not count."""
    store = sides_env
    src, dst = store.buckets()
    old = _put(store, dst, "k", b"old")  # an earlier run's copy, known to the manifest
    r1 = _put(store, dst, "k", b"one")
    r2 = str(store.client.delete_object(Bucket=dst, Key="k")["VersionId"])
    _put(store, dst, "k0", b"one")
    _put(store, dst, "k/x", b"one")
    now = datetime.now(UTC)
    async with open_sides(_cfg(store, src, dst, tmp_path)) as sides:
        history = [_src("k", "s1", b"one"), _src("k", "s2", None), _src("k", "s3", b"three")]
        got, n = await _reconcile(sides, "k", history, frozenset({old}), now)
        assert got == [r1, r2, ""] and n == 2
        # Nothing known: the walk goes back to "old", which is not s1's copy: the first pair differs, no match.
        got, n = await _reconcile(sides, "k", history, frozenset(), now)
        assert got == ["", "", ""] and n == 0
        # The newest replica version known: nothing after it is unaccounted for.
        got, _ = await _reconcile(sides, "k", history, frozenset({r2}), now)
        assert got == ["", "", ""]
        # Kinds must agree: a version is not matched to a delete marker, in either direction.
        got, _ = await _reconcile(sides, "k", [_src("k", "s1", b"one"), _src("k", "s2", b"xx")], frozenset({old}), now)
        assert got == [r1, ""]
        # Order: the tail is matched from the first unfinished version, not searched for a fit,
        # and once a pair differs no later pair is taken (it would put a copy out of order).
        got, _ = await _reconcile(sides, "k", [_src("k", "s2", None)], frozenset({old}), now)
        assert got == [""]
        got, _ = await _reconcile(sides, "k", [_src("k", "s1", b"two"), _src("k", "s2", None)], frozenset({old}), now)
        assert got == ["", ""]


async def test_reconcile_compares_size_and_plain_md5_etags_only(sides_env: Store, tmp_path: Path) -> None:
    """Contract of the match: sizes must be equal; ETags must be equal unless either is a multipart
    ETag (with "-"), which a copy may legitimately change."""
    store = sides_env
    src, dst = store.buckets()
    r = _put(store, dst, "m", b"abcd")
    now = datetime.now(UTC)
    async with open_sides(_cfg(store, src, dst, tmp_path)) as sides:
        assert (await _reconcile(sides, "m", [_src("m", "s", b"abcd")], frozenset(), now))[0] == [r]
        assert (await _reconcile(sides, "m", [_src("m", "s", b"abcd", etag="0" * 32)], frozenset(), now))[0] == [""]
        assert (await _reconcile(sides, "m", [_src("m", "s", b"abcd", etag="0" * 32 + "-2")], frozenset(), now))[0] == [
            r
        ]
        assert (await _reconcile(sides, "m", [_src("m", "s", b"abcde", etag="0" * 32 + "-2")], frozenset(), now))[
            0
        ] == [""]


async def test_reconcile_ignores_replica_versions_older_than_the_job(sides_env: Store, tmp_path: Path) -> None:
    """Contract of the time window: a replica version written more than 5 minutes before the job's
    first run started is not one of its copies (and stops the walk); without a start time, any is."""
    store = sides_env
    src, dst = store.buckets()
    r = _put(store, dst, "t", b"same")
    now = datetime.now(UTC)
    async with open_sides(_cfg(store, src, dst, tmp_path)) as sides:
        v = [_src("t", "s", b"same")]
        assert (await _reconcile(sides, "t", v, frozenset(), now + timedelta(minutes=4)))[0] == [r]
        assert (await _reconcile(sides, "t", v, frozenset(), now + timedelta(minutes=10)))[0] == [""]
        assert (await _reconcile(sides, "t", v, frozenset(), None))[0] == [r]


# --- merging shard files -----------------------------------------------------------------------


def _shard_file(path: Path, shard: Shard, key: str, token: str, started: float = 12.5) -> None:
    m = Manifest.open(str(path), IDENTITY, create=True)
    m.save_shards([shard])
    job = KeyJob(
        shard.id, key, [Item(0, Version(key, "v0", 3, "e", "t")), Item(1, Version(key, "v1", 0, "", "t", True))]
    )
    with m.transaction() as c:
        Manifest.write_listed(c, [job], shard.id, key, True)
        Manifest.write_outcomes(c, [(int(State.COPIED), "r0", "", key, 0)])
        Manifest.write_upload(c, token, key, f"upload-{token}", started)
    m.close()


def test_merge_from_adds_shards_versions_and_open_uploads(tmp_path: Path) -> None:
    """Contract: merge_from adds another file's shard, version and upload rows, each column to its namesake."""
    a, b = tmp_path / "0.db", tmp_path / "1.db"
    _shard_file(a, Shard(0, "", None, "m"), "apple", "t0")
    _shard_file(b, Shard(1, "", "m", None), "pear", "t1", started=13.5)
    merged = Manifest.open(str(tmp_path / "merged.db"), IDENTITY, create=True)
    merged.merge_from(a)
    merged.merge_from(b)
    assert [(s.id, s.after, s.upto, marker, listed) for s, marker, listed in merged.shards()] == [
        (0, None, "m", "apple", True),
        (1, "m", None, "pear", True),
    ]
    assert merged.versions_of("pear") == {"v0": ("copied", "r0", ""), "v1": ("pending", "", "")}
    assert [(u.token, u.key, u.upload_id, u.started) for u in merged.open_uploads()] == [
        ("t0", "apple", "upload-t0", 12.5),
        ("t1", "pear", "upload-t1", 13.5),
    ]
    assert merged.summary().totals()["versions"] == 4
    merged.close()


def test_merge_from_matches_columns_by_name_not_position(tmp_path: Path) -> None:
    """A shard file whose tables list their columns in another order (or lack a table) merges by name."""
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.executescript(
        """
        CREATE TABLE shard (listed INTEGER, marker TEXT, upto TEXT, after TEXT, prefix TEXT, id INTEGER PRIMARY KEY);
        CREATE TABLE version (why TEXT, rvid TEXT, sc TEXT, dm INTEGER, etag TEXT, size INTEGER, state INTEGER,
                              vid TEXT, shard INTEGER, seq INTEGER, key TEXT);
        INSERT INTO shard VALUES (1, 'k', NULL, NULL, 'p/', 7);
        INSERT INTO version VALUES ('gone', NULL, 'GLACIER', NULL, 'abc', 42, 3, 'v9', 7, 0, 'p/k');
        """
    )
    db.commit()
    db.close()
    merged = Manifest.open(str(tmp_path / "merged.db"), IDENTITY, create=True)
    merged.merge_from(other)  # no upload table there: none added
    assert [(s.id, s.prefix, marker, listed) for s, marker, listed in merged.shards()] == [(7, "p/", "k", True)]
    row = merged.conn.execute(
        "SELECT key, seq, shard, vid, state, size, etag, dm, sc, rvid, why FROM version"
    ).fetchall()
    assert row == [("p/k", 0, 7, "v9", 3, 42, "abc", None, "GLACIER", None, "gone")]
    assert merged.open_uploads() == []
    merged.close()


def test_snapshot_to_is_one_private_file_with_the_committed_rows(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    _shard_file(live, Shard(0, "", None, None), "k", "t")
    m = Manifest.open(str(live), IDENTITY, create=True)  # WAL mode, open while the copy is taken
    copy = tmp_path / "snap.db"
    copy.write_bytes(b"stale")
    m.snapshot_to(copy)
    m.close()
    assert copy.stat().st_mode & 0o777 == 0o600
    assert not Path(f"{copy}-wal").exists()
    db = sqlite3.connect(copy)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    db.close()
    snap = Manifest.open(str(copy), None, create=False)
    assert snap.versions_of("k")["v0"] == ("copied", "r0", "")
    assert [u.token for u in snap.open_uploads()] == ["t"]
    snap.close()


# --- the summary of a copy ---------------------------------------------------------------------


def _keys(d: dict[str, Any], at: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out.add(at + k)
        if isinstance(v, dict) and k != "problems":
            out |= _keys(v, f"{at}{k}.")
    return out


def test_copy_json_has_the_same_keys_for_manifest_and_state_runs(seaweed: Store, tmp_path: Path) -> None:
    """Contract of `copy --json` (README "The summary of a copy"): a --state run has every key of a
    --manifest run, with the same meaning (here: the same counts of the same copy), plus its own few;
    its pacing figures come from the sides its shards ran on."""
    src, dst = seaweed.buckets()
    _, dst2 = seaweed.buckets()
    for i in range(6):
        _put(seaweed, src, f"k{i}", b"x" * i)
    seaweed.client.delete_object(Bucket=src, Key="k0")
    single = seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", str(tmp_path / "m.db"), "--json")
    sharded = seaweed.run(
        "copy", f"s3://{src}", f"s3://{dst2}", "--state", str(tmp_path / "st"), "--shards", "2", "--json"
    )
    assert single.code == 0 == sharded.code, single.stderr + sharded.stderr
    a, b = json.loads(single.stdout), json.loads(sharded.stdout)
    assert _keys(b) - _keys(a) == {"state", "engine", "errors", "this_run.shards_run"}
    assert _keys(a) <= _keys(b)
    for k in ("listed", "copied", "copied_bytes", "delete_markers", "failed", "skipped", "recovered_after_crash"):
        assert a["this_run"][k] == b["this_run"][k], k
    assert {k: v for k, v in a["job"].items() if k not in ("shards", "shards_listed")} == {
        k: v for k, v in b["job"].items() if k not in ("shards", "shards_listed")
    }
    assert a["manifest"] == str(tmp_path / "m.db") and b["manifest"] is None
    assert b["this_run"]["concurrency"]["ceiling"] == a["this_run"]["concurrency"]["ceiling"] > 0
    assert b["this_run"]["first_copy_seconds"] is not None
    n, copied = b["shards"], a["this_run"]["copied"]
    assert f"this run (local, {n}/{n} shards): {copied} copied" in sharded.stderr, sharded.stderr
    assert f"this run: {copied} copied" in single.stderr, single.stderr
