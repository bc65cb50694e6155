"""ListObjectVersions over one shard → key jobs, each key's history complete and oldest first.

A key's versions may straddle pages; a key is handed on only once its last
version is seen. Each page's complete keys are written ahead to the manifest
(with the shard's resume marker) before the copiers get them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from backfill.config import Filters
from backfill.models import Item, KeyJob, Page, Shard, State, Version
from backfill.pipeline.streams import send
from backfill.s3 import Bucket

FIRST_PAGE = 100
HOLD = 5000  # versions of one key held in memory while it is listed; a longer history is spilled
CHUNK = 1000  # versions of a spilled key handed to the copiers at a time
BLOCKED = "an earlier version of this key failed; versions are copied in order"

# (shard, after) → pages of complete key histories (newest first) and whether the shard is done
Pages = Callable[[Shard, str | None], AsyncIterator[tuple[list[list[Version]], bool]]]
Record = Callable[[int, list[KeyJob], str | None, bool], Awaitable[None]]


def _modified(v: Version) -> datetime:
    return datetime.fromisoformat(v.last_modified.replace("Z", "+00:00"))


def key_job(
    shard: int, newest_first: list[Version], *, src_prefix: str, latest_only: bool, filters: Filters
) -> KeyJob | None:
    """What of one key's history this job copies, or None when nothing."""
    key = newest_first[0].key
    if not filters.key_selected(key[len(src_prefix) :]):
        return None
    history = newest_first
    if filters.modified_before is not None:
        cutoff = filters.modified_before
        history = [v for v in history if _modified(v) < cutoff]
    if latest_only:
        history = history[:1]
        if history and history[0].is_delete_marker:
            return None  # the key is deleted: nothing to show in a latest-only replica
    if not history:
        return None
    return KeyJob(shard, key, [Item(seq, v) for seq, v in enumerate(reversed(history))])


async def key_pages(
    bucket: Bucket,
    prefix: str,
    after: str | None,
    upto: str | None,
    *,
    first_page: int = FIRST_PAGE,
    reuse: str = "start",
) -> AsyncIterator[tuple[list[list[Version]], bool]]:
    """Complete key histories (each newest first) of keys under `prefix` with after < key <= upto.

    Yields once per listing page: the keys that page completed (a key whose
    versions straddle pages is held back until its last version is seen) and
    whether the range is exhausted. `reuse`: whether the preflight's first page
    may answer the first request (Bucket.list_versions).
    """
    source = histories(bucket, prefix, after, upto, first_page=first_page, reuse=reuse)
    async for complete, _overflow, done in source:
        yield complete, done


async def histories(
    bucket: Bucket,
    prefix: str,
    after: str | None,
    upto: str | None,
    *,
    first_page: int = FIRST_PAGE,
    hold: int | None = None,
    reuse: str = "start",
) -> AsyncIterator[tuple[list[list[Version]], list[Version], bool]]:
    """key_pages, with a bound on what one key's history may hold in memory: `hold` versions.

    Yields (complete, overflow, done). When the open key's versions exceed `hold`, all but the
    last are yielded at once as `overflow` (newest first, after the complete keys before it) and
    the key goes on; its remainder, at least one version, comes later as a complete history.
    """
    key_marker = after
    version_marker: str | None = None
    carry: list[Version] = []  # the current key's versions so far (not yet overflowed), newest first
    carry_ids: set[str] = set()  # and their IDs (with the last overflow's): a repeat is dropped
    done = False
    page_size = first_page  # a small first page gets work going within a second
    while not done:
        page = await bucket.list_versions(prefix, key_marker, version_marker, max_keys=page_size, reuse=reuse)
        page_size = 1000
        reuse = "never" if reuse == "never" else "start"  # "within" is for a listing's first request
        complete: list[list[Version]] = []
        for v in page.entries:
            if key_marker is not None and (v.key < key_marker or (v.key == key_marker and not version_marker)):
                continue  # at or before the marker: some servers repeat it (S3 lists strictly after it)
            if carry and v.key == carry[0].key and v.version_id in carry_ids:
                continue  # a version repeated across a page boundary
            if upto is not None and v.key > upto:
                done = True
                break
            if carry and carry[0].key != v.key:
                complete.append(carry)
                carry, carry_ids = [], set()
            carry.append(v)
            carry_ids.add(v.version_id)
            if hold is not None and len(carry) > hold:
                overflow, carry = carry[:-1], carry[-1:]
                yield complete, overflow, False
                complete, carry_ids = [], {x.version_id for x in overflow[-1000:]} | {v.version_id}
        if not page.truncated or not page.next_key_marker:
            done = True
        if done and carry:
            complete.append(carry)
            carry, carry_ids = [], set()
        if complete or done:
            yield complete, [], done
        key_marker, version_marker = page.next_key_marker, page.next_version_id_marker


class History(Protocol):
    """Where a long history goes while it is listed, and comes back from oldest first (the manifest)."""

    async def spill(self, shard: int, versions: list[Version], first: int, last: bool) -> None: ...

    async def chunk(self, key: str, after_seq: int, limit: int) -> list[Item]: ...

    async def blocked(self, key: str, after_seq: int, why: str) -> None: ...


async def list_shard(
    src: Bucket,
    shard: Shard,
    marker: str | None,
    *,
    record: Record,
    out: MemoryObjectSendStream[KeyJob],
    make_job: Callable[[int, list[Version]], KeyJob | None],
    on_page: Callable[[list[KeyJob]], None],
    pages: Pages | None = None,
    history: History | None = None,
) -> None:
    """List one shard (from its resume marker): write each page ahead, then hand its keys on.

    `pages` replaces ListObjectVersions as the source of the shard's key histories (an inventory).
    With `history`, a key of more than HOLD versions is not held in memory: its versions go to
    the manifest as they are listed (newest first), and once its last one is seen they are written
    ahead in its place, then copied from there oldest first, a chunk at a time (`feed_in_order`).
    """
    after = marker if marker is not None else shard.after
    source: AsyncIterator[tuple[list[list[Version]], list[Version], bool]]
    if pages is not None or history is None:
        plain = (
            pages(shard, after)
            if pages is not None
            else key_pages(src, shard.prefix, after, shard.upto, reuse="within")
        )
        source = _without_overflow(plain)
    else:
        source = histories(src, shard.prefix, after, shard.upto, hold=HOLD, reuse="within")
    long: _Long | None = None  # the key being spilled
    before = after  # where the next page's key range begins
    async with anyio.create_task_group() as feeders:
        async for complete, overflow, done in source:
            jobs: list[KeyJob] = []
            spilled: _Long | None = None
            for h in complete:
                if long is not None and h[0].key == long.key:
                    # The rest (the oldest versions) of the long key: written ahead with this page.
                    await long.add(h, make_job, on_page, last=True)
                    spilled, long = long, None
                    continue
                j = make_job(shard.id, h)
                if j is not None:
                    jobs.append(j)
            if complete or done:
                last = complete[-1][0].key if complete else None
                await record(shard.id, jobs, last, done)
                on_page(jobs)
                if jobs and last is not None and pages is None:  # a listing's page is a key range
                    page = Page(shard.prefix, before, last, len(jobs))
                    for job in jobs:
                        job.page = page
                if last is not None:
                    before = last
                for job in jobs:
                    await send(out, job)
            if spilled is not None and spilled.count:
                feeders.start_soon(feed_in_order, spilled.history, out, shard.id, spilled.key, spilled.recheck)
            if overflow:
                assert history is not None
                if long is None:
                    long = _Long(shard.id, overflow[0].key, history)
                await long.add(overflow, make_job, on_page)


async def _without_overflow(
    source: AsyncIterator[tuple[list[list[Version]], bool]],
) -> AsyncIterator[tuple[list[list[Version]], list[Version], bool]]:
    async for complete, done in source:
        yield complete, [], done


@dataclass(slots=True)
class _Long:
    """A key whose history is spilled to the manifest as it is listed."""

    shard: int
    key: str
    history: History
    count: int = 0  # versions spilled (after the filters)
    recheck: bool = False

    async def add(
        self,
        newest_first: list[Version],
        make_job: Callable[[int, list[Version]], KeyJob | None],
        on_page: Callable[[list[KeyJob]], None],
        *,
        last: bool = False,
    ) -> None:
        """Spill the next part of the history (through the same filters as a whole key's); `last`: its
        end, which the next record of the shard writes ahead."""
        job = make_job(self.shard, newest_first)
        kept = [it.version for it in reversed(job.items)] if job is not None else []
        if job is not None:
            self.recheck = self.recheck or job.recheck
            on_page([job])
        if kept or last or self.count == 0:  # the first spill, even of nothing, clears what a dead run left
            await self.history.spill(self.shard, kept, self.count, last)
        self.count += len(kept)


async def feed_in_order(
    history: History, out: MemoryObjectSendStream[KeyJob], shard: int, key: str, recheck: bool
) -> None:
    """Hand a long key's written-ahead versions to the copiers CHUNK at a time, oldest first, each
    chunk once the one before it is done (a key's versions are copied in order). A chunk that leaves
    a version failed stops the key: the rest are recorded as failed behind it, as within one job."""
    after = -1
    known: frozenset[str] = frozenset()
    while True:
        items = await history.chunk(key, after, CHUNK)
        if not items:
            return
        finished = anyio.Event()
        job = KeyJob(shard, key, items, recheck=recheck, known=known, finished=finished.set)
        await send(out, job)
        await finished.wait()
        job.items, job.known = [], frozenset()  # an idle copier holds on to its last job: not to a chunk
        if any(it.state is State.FAILED for it in items):
            await history.blocked(key, items[-1].seq, BLOCKED)
            return
        if any(it.state is State.PENDING for it in items):
            return  # the run is stopping: the rest stays pending for the next one
        after, recheck = items[-1].seq, False
        known = frozenset(it.replica_version_id for it in items if it.replica_version_id)
