"""Copy workers: one key's history at a time, in order; many keys at once.

A failed version stops its key (later versions must not overtake it in the
replica); they are recorded as failed and retried, in order, by the next run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from backfill.config import rebase
from backfill.errors import SIGNATURE_CODES, AccessDenied, ObjectError, RetryableError, credentials_expired
from backfill.models import Item, KeyJob, Page, State, Version
from backfill.pipeline.checkpoint import Checkpoint
from backfill.pipeline.evidence import Head, HeadFn, is_our_copy, may_be_ours
from backfill.pipeline.lister import BLOCKED, key_pages
from backfill.pipeline.replication import (
    BATCH_REPLICATION,
    REPLICA,
    Fix,
    Owner,
    Rule,
    Scope,
    fix_needed,
    ours_on_top,
    plan_key,
)
from backfill.pipeline.streams import receive_all
from backfill.progress import Counters
from backfill.s3 import SSE_C, SSE_C_SKIPPED_WHY, Bucket, Copier

# Error codes that mean "this version cannot be had", not "this run is broken".
_VANISHED = frozenset({"NoSuchVersion", "NoSuchKey", "404"})
_ARCHIVED = frozenset({"InvalidObjectState", "ObjectNotInActiveTierError"})
LANDING_WAIT = 1.0  # seconds before looking for a write whose outcome was lost
SETTLE_RATE = 20 * 1024 * 1024  # bytes/s a server-side copy is assumed to manage at least


@dataclass(slots=True)
class Workers:
    copier: Copier
    checkpoint: Checkpoint
    counters: Counters
    stop: anyio.Event
    src_prefix: str
    dst_prefix: str
    first_run_started: datetime | None
    # Awaited before each copy: a shard lease (distributed.shard) waits out a late renewal, False once lost.
    may_copy: Callable[[], Awaitable[bool]] | None = None
    # The source's live replication into the replica (pipeline/replication.py); None: the plain copy.
    replication: Scope | None = None
    # Outcomes held back per job (id) until the late copy's fix is recorded with them (copy_key).
    _held: dict[int, list[tuple[int, str, str, str, int]]] = field(default_factory=dict)
    # Pages whose cold keys wait for the check after their copies (`_recheck`), by id.
    _unchecked: dict[int, Page] = field(default_factory=dict)

    def dest_key(self, key: str) -> str:
        return rebase(key, self.src_prefix, self.dst_prefix)

    async def worker(self, jobs: MemoryObjectReceiveStream[KeyJob]) -> None:
        async with jobs:
            async for job in receive_all(jobs):
                if self.stop.is_set():
                    return  # the rest stays pending in the manifest
                await self.copy_key(job)
                if job.finished is not None:
                    job.finished()
                page = job.page
                if page is not None:
                    page.left -= 1
                    if page.left == 0 and page.cold:
                        await self.recheck(page)

    async def copy_key(self, job: KeyJob) -> None:
        top = job.top
        if top is None or all(it.seq > top.seq for it in job.items if it.state is not State.COPIED):
            await self._copy_versions(job)  # in order (a resume's suffix of the history, too)
            return
        # A later run's job of a key whose newer versions an earlier run copied: a version copied now (given
        # its SSE-C key, restored from an archive) lands above them. Its outcomes are held back and recorded
        # together with the final copy of the key's newest version, in one transaction: a crash before that
        # leaves them unrecorded, so the next run finds the copies (reconcile) and makes the fix then.
        held: list[tuple[int, str, str, str, int]] = []
        self._held[id(job)] = held
        try:
            decided = await self._copy_versions(job)
        finally:
            del self._held[id(job)]
        if decided is None or self.stop.is_set() or (self.may_copy is not None and not await self.may_copy()):
            return  # unsettled: left to the next run, which finds these copies again
        try:
            fix = None if decided else await self._late_fix(job, self.dest_key(job.key))
        except (RetryableError, ObjectError) as exc:
            if not (isinstance(exc, ObjectError) and exc.code in _VANISHED):
                return  # the next run tries again
            fix = None  # the newest version is gone from the source: nothing to copy once more
        vid, rvid, dm = fix or ("", "", False)
        await self.checkpoint.fixed(job.key, vid, rvid, delete_marker=dm, outcomes=tuple(held))

    async def _late_fix(self, job: KeyJob, dkey: str) -> tuple[str, str, bool] | None:
        """After a late copy: give the key one final copy of its newest version `job.top` (or a delete
        marker), unless a version copied now is the newest, or the replica's newest entry is not one of this
        run's copies (then it is `top`'s own copy, a fix that landed before a crash, or another writer's)."""
        top = job.top
        assert top is not None
        copied = {it.replica_version_id: it.seq for it in job.items if it.state is State.COPIED}
        if not copied or max(copied.values()) > top.seq:
            return None  # nothing copied now, or in order: the newest copy is the key's newest version
        history = await self._replica_history(dkey)
        newest = history[-1] if history else None
        v = top.version
        if newest is None or newest.version_id == top.replica_version_id:
            return None
        if newest.version_id not in copied:
            recorded = job.known | set(copied)
            if may_be_ours(
                newest, recorded=recorded, source_ids=self._source_ids(job), since=self.first_run_started
            ) and await is_our_copy(v, newest, self._head_source(v), self._head_replica(dkey, newest)):
                self.counters.current_fixes += 1
                return v.version_id, newest.version_id, v.is_delete_marker  # made before a crash
            return None
        landed = self._landed(job, top, dkey)
        rvid = await (
            self.copier.delete_marker(dkey, landed) if v.is_delete_marker else self.copier.copy(v, dkey, landed)
        )
        self.counters.current_fixes += 1
        return v.version_id, rvid, v.is_delete_marker

    async def _copy_versions(self, job: KeyJob) -> bool | None:
        """Copy the job's versions in order, beside live replication when it covers the key. True: the
        replication check decided the key's current version; None: stopped or left unsettled."""
        dkey = self.dest_key(job.key)
        rule = self.replication.rule_for(job.key) if self.replication is not None else None
        owners: list[Owner] = []
        hot = False
        if rule is not None:
            try:
                owners, hot = await self._whose(job)
            except (RetryableError, ObjectError) as exc:
                for it in job.items:
                    if it.state is not State.COPIED:
                        await self._record(job, it, State.FAILED, why=f"replication status unknown: {exc}")
                return False
        if job.recheck:
            theirs = {id(it) for n, it in enumerate(job.items) if owners and owners[n] is not Owner.BACKFILL}
            await self.reconcile(job, dkey, replicated=rule is not None, theirs=theirs)
        failed = False
        for n, it in enumerate(job.items):
            if it.state is State.COPIED:
                continue
            if owners and owners[n] is not Owner.BACKFILL:
                if owners[n] is Owner.FAILED:
                    await self._record(job, it, State.FAILED, why=BATCH_REPLICATION)
                continue  # replication's: recorded after the key's current version is checked
            if self.stop.is_set() or (self.may_copy is not None and not await self.may_copy()):
                return None
            if failed:
                await self._record(job, it, State.FAILED, why=BLOCKED)
                continue
            v = it.version
            landed = self._landed(job, it, dkey)
            try:
                if v.is_delete_marker:
                    rvid = await self.copier.delete_marker(dkey, landed)
                else:
                    rvid = await self.copier.copy(v, dkey, landed)
            except AccessDenied as exc:
                if self.counters.copied == 0:
                    raise  # nothing has worked yet: the grant is missing, not this object's
                if exc.code in SIGNATURE_CODES:  # it worked before: the credentials changed under the run
                    raise credentials_expired(exc.who, exc.code) from exc
                failed = True
                await self._record(job, it, State.FAILED, why=str(exc))
            except ObjectError as exc:
                if exc.code in _ARCHIVED:
                    await self._record(
                        job,
                        it,
                        State.SKIPPED,
                        why=f"archived ({v.storage_class or 'GLACIER'}), not restored: restore it, then run again",
                    )
                elif exc.code == SSE_C:  # no key for it: skipped, not blocking (a run with the key copies it)
                    await self._record(job, it, State.SKIPPED, why=SSE_C_SKIPPED_WHY)
                elif exc.code in _VANISHED:
                    await self._record(job, it, State.SKIPPED, why="vanished from the source since it was listed")
                else:
                    failed = True
                    await self._record(job, it, State.FAILED, why=str(exc))
            except RetryableError as exc:
                failed = True
                await self._record(job, it, State.FAILED, why=f"gave up after retries: {exc}")
            else:
                if self.counters.first_copy_at is None:
                    self.counters.first_copy_at = self.counters.elapsed()
                await self._record(job, it, State.COPIED, rvid=rvid)
        if rule is None or self.stop.is_set():
            return None if self.stop.is_set() else False
        decided = False
        page = job.page if not failed and not hot and self._defer(job, owners) else None
        if page is not None:
            page.cold.append(job)  # checked with its page's other keys (recheck)
            self._unchecked[id(page)] = page
        elif not failed:
            try:
                decided = await self._check_current(job, dkey, rule, only_if_written=not hot)
            except (RetryableError, ObjectError):
                return None  # the versions left to replication stay pending: the next run checks the key again
        for n, it in enumerate(job.items):
            if owners[n] is Owner.REPLICATION and it.state is State.PENDING:
                await self._record(job, it, State.LEFT_TO_REPLICATION)
        return decided

    @staticmethod
    def _defer(job: KeyJob, owners: list[Owner]) -> bool:
        """Whether a cold key's check after its copies can wait for its page's (`recheck`): a key listed
        now (not resumed, not a late copy), nothing of it left to replication."""
        return job.page is not None and job.top is None and not job.recheck and all(o is Owner.BACKFILL for o in owners)

    async def recheck(self, page: Page) -> None:
        """Live replication's check after the copies, for a page's cold keys at once (pipeline/replication.py).

        One listing of the page's key range (a page or so, against a HEAD per key) shows whether anything
        was written to each of them since they were listed. Only such a key is then checked as a hot key is
        (the replica's history listed, the source's current version HEADed): replication may have delivered
        the new version while the old ones were being copied, under them. Also called, once the copiers are
        done, for the pages a stopping run left unfinished (`copy_workers`)."""
        self._unchecked.pop(id(page), None)
        cold, page.cold = {job.key: job for job in page.cold}, []
        if not cold or self.replication is None:
            return
        written: list[KeyJob] = []
        try:
            src = self.copier.source
            pages = key_pages(src, page.prefix, page.after, page.upto, first_page=1000, reuse="never")
            async for complete, _done in pages:
                for newest_first in complete:
                    job = cold.pop(newest_first[0].key, None)
                    if job is not None and not _unchanged(job.items[-1].version, newest_first[0]):
                        written.append(job)
        except (RetryableError, ObjectError):
            return  # unchecked, as after a crash (the README's window)
        written.extend(cold.values())  # not listed any more: every version deleted since
        for job in written:
            rule = self.replication.rule_for(job.key)
            if rule is None:
                continue
            with contextlib.suppress(RetryableError, ObjectError):
                await self._check_current(job, self.dest_key(job.key), rule)

    async def _whose(self, job: KeyJob) -> tuple[list[Owner], bool]:
        """Which of the job's versions are replication's (pipeline/replication.py: one HEAD per cold key)."""
        src, c = self.copier.source, self.counters
        pending = [it for it in job.items if it.state is not State.COPIED]

        async def head_current() -> tuple[Version | None, str | None]:
            return await src.head_current(job.key)

        async def head_version(v: Version) -> str | None:
            return await src.replication_status(v.key, v.version_id)

        plan = await plan_key([it.version for it in pending], head_current=head_current, head_version=head_version)
        c.replication_heads += plan.heads
        by_item = {id(it): o for it, o in zip(pending, plan.owners, strict=True)}
        return [by_item.get(id(it), Owner.BACKFILL) for it in job.items], plan.hot

    async def _check_current(self, job: KeyJob, dkey: str, rule: Rule, *, only_if_written: bool = False) -> bool:
        """After a key's copies: make the replica's current version the source's (the final copy).

        `only_if_written`: a cold key (nothing after the rule when it was planned): HEAD it first; only
        an entry written since the listing (another current version, or a delete marker on top of a
        listed object version) calls for the check — replication may have delivered it while the old
        versions were being copied, and they would then lie on top of it. True when this decided the
        current version (a fix made, or replication's to make); False when the source's current version
        is from before the rule (then a late copy's fix, `_late_fix`, may still be due).
        """
        current = None
        if only_if_written:
            current = await self.copier.source.head_current(job.key)
            self.counters.replication_heads += 1
            listed = job.items[-1].version
            now = current[0]
            if (now is None) if listed.is_delete_marker else (now is not None and now.version_id == listed.version_id):
                return False  # the listed newest entry is still the key's: nothing written since the listing
        history = await self._replica_history(dkey)
        newest = history[-1] if history else None
        ours = job.known | {x.replica_version_id for x in job.items if x.replica_version_id}
        if not ours_on_top(newest, ours):
            return True  # replication delivered on top of the copies: its version is the current one
        if current is None:
            current = await self.copier.source.head_current(job.key)
            self.counters.replication_heads += 1
        # S3 sets COMPLETED once the replica is written: a version still PENDING may already lie below.
        cur = current[0]
        delivered = cur is not None and any(
            r.version_id not in ours and not r.is_delete_marker and _alike(cur, r) for r in history
        )
        fix = fix_needed(newest, ours, current, delete_markers=rule.delete_markers, delivered=delivered)
        if fix is Fix.NONE:
            return current[1] is not None  # a status: replication puts (or put) it on top
        v = current[0]
        probe = Item(-1, v if v is not None else Version(job.key, "", 0, "", "", is_delete_marker=True))
        landed = self._landed(job, probe, dkey)
        if fix is Fix.DELETE_MARKER:
            rvid = await self.copier.delete_marker(dkey, landed)
        else:
            assert v is not None
            rvid = await self.copier.copy(v, dkey, landed)
        self.counters.current_fixes += 1
        held = self._held.get(id(job)) if self._held else None
        outcomes = tuple(held or ())  # a late copy's outcomes go with the fix that covers it (copy_key)
        if held:
            held.clear()
        dm = fix is Fix.DELETE_MARKER
        await self.checkpoint.fixed(job.key, probe.version.version_id, rvid, delete_marker=dm, outcomes=outcomes)
        return True

    async def _replica_history(self, dkey: str) -> list[Version]:
        history: list[Version] = []  # oldest first
        async for complete, _done in key_pages(self.copier.dest, dkey, None, dkey, first_page=1000):
            for newest_first in complete:
                history = newest_first[::-1]
        return history

    async def _record(self, job: KeyJob, it: Item, state: State, *, rvid: str = "", why: str = "") -> None:
        it.state, it.replica_version_id, it.why = state, rvid, why
        c = self.counters
        if state is State.COPIED:
            c.copied += 1
            c.copied_bytes += it.version.size
            c.delete_markers += it.version.is_delete_marker
        elif state is State.LEFT_TO_REPLICATION:
            c.left_to_replication += 1
        elif state is State.FAILED:
            c.failed += 1
        else:
            c.skipped += 1
        await self._write(job, it.seq, state, rvid, why)

    async def _write(self, job: KeyJob, seq: int, state: State, rvid: str = "", why: str = "") -> None:
        held = self._held.get(id(job)) if self._held else None
        if held is not None:
            held.append((int(state), rvid, why, job.key, seq))  # recorded with the late copy's fix
        else:
            await self.checkpoint.outcome(job.key, seq, state, rvid, why)

    def _landed(self, job: KeyJob, it: Item, dkey: str) -> Callable[[], Awaitable[str | None]]:
        """After a write failed in a way that leaves it unknown whether it happened: did it?

        The write happened if the replica's newest version of the key is one that
        the manifest does not know for this key, is younger than the job, and
        matches the source version (the same rule as reconcile). The server may
        still be carrying out a request whose connection was lost: wait a little
        (longer for a larger object) before looking.
        """

        async def check() -> str | None:
            await anyio.sleep(LANDING_WAIT + it.version.size / SETTLE_RATE)
            newest: Version | None = None
            async for complete, _done in key_pages(self.copier.dest, dkey, None, dkey, first_page=1000):
                for newest_first in complete:
                    newest = newest_first[0]
            if newest is None:
                return None
            recorded = job.known | {x.replica_version_id for x in job.items if x.replica_version_id}
            if not may_be_ours(
                newest, recorded=recorded, source_ids=self._source_ids(job), since=self.first_run_started
            ):
                return None
            if not await is_our_copy(
                it.version, newest, self._head_source(it.version), self._head_replica(dkey, newest)
            ):
                return None
            return newest.version_id

        return check

    @staticmethod
    def _source_ids(job: KeyJob) -> set[str]:
        return {x.version.version_id for x in job.items}

    def _head_source(self, v: Version) -> HeadFn:
        return self._head(self.copier.source, v.key, v.version_id)

    def _head_replica(self, dkey: str, r: Version) -> HeadFn:
        return self._head(self.copier.dest, dkey, r.version_id)

    @staticmethod
    def _head(bucket: Bucket, key: str, version_id: str) -> HeadFn:
        """A HEAD with checksums for the evidence; None when refused (SSE-C without its key, gone)."""

        async def head() -> Head | None:
            try:
                return await bucket.head(key, version_id, checksums=True)
            except ObjectError:
                return None

        return head

    async def _is_replica(self, dkey: str, r: Version) -> bool:
        if r.is_delete_marker:
            return False  # a delete marker shows no status
        self.counters.replication_heads += 1
        return await self.copier.dest.replication_status(dkey, r.version_id) == REPLICA

    async def reconcile(
        self, job: KeyJob, dkey: str, *, replicated: bool = False, theirs: set[int] | None = None
    ) -> None:
        """Versions of this key may have reached the replica before the last run died.

        Copies of one key happen in order, and outcomes are committed in batches,
        so what a crash can leave behind is a run of copies at the end of the
        replica's history that the manifest does not know: the replica versions
        after the last one the manifest recorded (and younger than the job). They
        are matched, in order, against the unfinished versions; each match is
        recorded instead of copied again.
        """
        history: list[Version] = []  # oldest first
        # Keys under the prefix `dkey` and at most `dkey`: exactly this key.
        async for complete, _done in key_pages(self.copier.dest, dkey, None, dkey, first_page=1000):
            for newest_first in complete:
                history = newest_first[::-1]
        source_ids = self._source_ids(job)
        tail: list[Version] = []
        for r in reversed(history):
            if r.version_id in job.known:
                break  # everything older is accounted for
            if not may_be_ours(r, recorded=job.known, source_ids=source_ids, since=self.first_run_started):
                if r.version_id in source_ids:
                    continue  # live replication's copy of a source version: not ours, not in our way
                break  # there before this job started: not ours
            tail.append(r)
        tail.reverse()
        if replicated:  # what live replication delivered is not a copy of ours (same ID on S3, REPLICA here)
            ids = {it.version.version_id for it in job.items}
            tail = [r for r in tail if r.version_id not in ids and not await self._is_replica(dkey, r)]
        # Only the versions this job copies (not those left to replication, `theirs`) can be in the tail.
        todo = [it for it in job.items if it.state is not State.COPIED and id(it) not in (theirs or set())]
        pairs: list[tuple[Item, Version]] = []
        k = 0
        for r in tail:
            if k == len(todo):
                break
            v = todo[k].version
            if await is_our_copy(v, r, self._head_source(v), self._head_replica(dkey, r)):
                pairs.append((todo[k], r))
                k += 1
            elif not (replicated and r.is_delete_marker):
                break
            # else: a delete marker replication delivered (it shows no REPLICA status): not ours, passed over
        for it, r in pairs:
            self.counters.recovered += 1
            await self._write(job, it.seq, State.COPIED, r.version_id)
            it.state, it.replica_version_id = State.COPIED, r.version_id


def _unchanged(listed: Version, now: Version) -> bool:
    """Whether a key's newest entry `now` is still the one it was listed with (a deleted key: still deleted)."""
    return now.version_id == listed.version_id or (listed.is_delete_marker and now.is_delete_marker)


def _alike(src: Version, replica: Version) -> bool:
    """Whether a replica version may hold the source version's content, from the listing alone (kind, size,
    and plain-MD5 ETags where both are single-part): how a version replication delivered is recognised."""
    if src.is_delete_marker or replica.is_delete_marker:
        return src.is_delete_marker and replica.is_delete_marker
    if src.size != replica.size:
        return False
    a, b = src.etag, replica.etag
    return "-" in a or "-" in b or a == b


async def copy_workers(w: Workers, jobs: MemoryObjectReceiveStream[KeyJob], n: int) -> None:
    async with anyio.create_task_group() as tg, jobs:
        for _ in range(n):
            tg.start_soon(w.worker, jobs.clone())
    for page in list(w._unchecked.values()):  # a stopped run's cold keys whose page was left unfinished
        await w.recheck(page)
