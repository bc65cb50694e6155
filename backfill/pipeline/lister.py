"""ListObjectVersions over one shard → key jobs, each key's history complete and oldest first.

A key's versions may straddle pages; a key is handed on only once its last
version is seen. Each page's complete keys are written ahead to the manifest
(with the shard's resume marker) before the copiers get them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

from anyio.streams.memory import MemoryObjectSendStream

from backfill.config import Filters
from backfill.models import Item, KeyJob, Shard, Version
from backfill.pipeline.streams import send
from backfill.s3 import Bucket

FIRST_PAGE = 100

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
    bucket: Bucket, prefix: str, after: str | None, upto: str | None, *, first_page: int = FIRST_PAGE
) -> AsyncIterator[tuple[list[list[Version]], bool]]:
    """Complete key histories (each newest first) of keys under `prefix` with after < key <= upto.

    Yields once per listing page: the keys that page completed (a key whose
    versions straddle pages is held back until its last version is seen) and
    whether the range is exhausted.
    """
    key_marker = after
    version_marker: str | None = None
    carry: list[Version] = []  # the current key's versions so far, newest first
    carry_ids: set[str] = set()
    done = False
    page_size = first_page  # a small first page gets work going within a second
    while not done:
        page = await bucket.list_versions(prefix, key_marker, version_marker, max_keys=page_size)
        page_size = 1000
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
        if not page.truncated or not page.next_key_marker:
            done = True
        if done and carry:
            complete.append(carry)
            carry, carry_ids = [], set()
        if complete or done:
            yield complete, done
        key_marker, version_marker = page.next_key_marker, page.next_version_id_marker


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
) -> None:
    """List one shard (from its resume marker): write each page ahead, then hand its keys on.

    `pages` replaces ListObjectVersions as the source of the shard's key histories (an inventory)."""
    after = marker if marker is not None else shard.after
    source = pages(shard, after) if pages is not None else key_pages(src, shard.prefix, after, shard.upto)
    async for complete, done in source:
        jobs = [j for j in (make_job(shard.id, h) for h in complete) if j is not None]
        await record(shard.id, jobs, complete[-1][0].key if complete else None, done)
        on_page(jobs)
        for job in jobs:
            await send(out, job)
