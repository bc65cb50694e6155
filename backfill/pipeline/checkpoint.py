"""The single manifest writer: messages from listers and copiers → batched transactions.

Listers wait for their page to be committed (write-ahead: a version is in the
manifest before its copy starts); copiers do not wait for their outcomes. A
multipart copy waits for its upload to be recorded (before CreateMultipartUpload,
and with its ID before the first part), not for the record's removal.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import anyio

from backfill.manifest import Manifest
from backfill.models import Item, KeyJob, State, Version

MAX_BATCH = 5000  # rows per transaction
MAX_DELAY = 0.5  # seconds an outcome may wait for its transaction (each commit is an fsync)


@dataclass(slots=True)
class _Listed:
    shard: int
    jobs: list[KeyJob]
    marker: str | None
    done: bool
    settle: bool = False  # the shard's spilled history ends in this page: write it ahead too
    committed: anyio.Event = field(default_factory=anyio.Event)


@dataclass(slots=True)
class _Spill:
    shard: int
    versions: list[Version]
    first: int
    committed: anyio.Event = field(default_factory=anyio.Event)


@dataclass(slots=True)
class _Blocked:
    key: str
    seq: int
    why: str


@dataclass(slots=True)
class _Upload:
    token: str
    key: str = ""
    upload_id: str | None = None
    started: float = 0.0
    ended: bool = False  # completed or aborted: forget it
    committed: anyio.Event = field(default_factory=anyio.Event)


_Outcome = tuple[int, str, str, str, int]  # state, replica version id, why, key, seq


@dataclass(slots=True)
class _Fix:
    key: str
    vid: str
    rvid: str  # "": no fix, only the outcomes
    dm: bool
    outcomes: tuple[_Outcome, ...] = ()  # committed in the fix's transaction (pipeline/copier.py: a late copy)


_Record = _Listed | _Spill | _Upload | _Fix | _Blocked  # the rarer messages; outcomes come one per copy
MAX_QUEUE = 2 * MAX_BATCH  # outcomes queued beyond this wait for the writer (backpressure)


def _waited(m: _Record) -> bool:
    return isinstance(m, _Listed | _Spill) or (isinstance(m, _Upload) and not m.ended)


class Checkpoint:
    """Outcomes go to a plain list (one append per copy, no stream); the rarer records, which a
    lister or a copier may wait for, to another. The writer takes both in one transaction, records
    first: an outcome's row was committed (listed) before its copy began."""

    def __init__(self, manifest: Manifest | None) -> None:
        self.manifest = manifest
        self._outcomes: list[_Outcome] = []
        self._records: list[_Record] = []
        self._urgent = 0  # queued records that someone waits for
        self._since = 0.0  # when the oldest queued message came
        self._wake = anyio.Event()  # set when the writer should look again
        self._room = anyio.Event()  # set when the writer took a batch (for outcomes held back)
        self._closed = False
        self._settle: set[int] = set()  # shards whose spilled history the next listed page ends
        self._reader: Manifest | None = None
        self._reading = anyio.Lock()

    def _arrived(self) -> None:
        if not self._outcomes and not self._records:
            self._since = time.monotonic()
            self._wake.set()

    async def _record(self, msg: _Record, wait: bool) -> None:
        self._arrived()
        self._records.append(msg)
        if wait:
            assert isinstance(msg, _Listed | _Spill | _Upload)
            self._urgent += 1
            self._wake.set()
            await msg.committed.wait()

    async def listed(self, shard: int, jobs: list[KeyJob], marker: str | None, done: bool) -> None:
        """Record a page's keys as pending (and the shard's marker); return once committed."""
        if self.manifest is None:  # dry run
            return
        settle = shard in self._settle
        self._settle.discard(shard)
        await self._record(_Listed(shard, jobs, marker, done, settle), True)

    # lister.History: where a key's history too long for memory waits while it is listed.

    @property
    def history(self) -> Checkpoint | None:
        return self if self.manifest is not None else None

    async def spill(self, shard: int, versions: list[Version], first: int, last: bool) -> None:
        """Keep a part of a long history aside; `last`: its end, which the shard's next page writes ahead."""
        if last:
            self._settle.add(shard)
        await self._record(_Spill(shard, versions, first), True)

    async def chunk(self, key: str, after_seq: int, limit: int) -> list[Item]:
        """The next `limit` written-ahead versions of `key` after `after_seq`, oldest first."""
        assert self.manifest is not None
        async with self._reading:
            if self._reader is None:
                self._reader = self.manifest.reader()
            return await anyio.to_thread.run_sync(self._reader.history, key, after_seq, limit)

    async def blocked(self, key: str, after_seq: int, why: str) -> None:
        """`key`'s versions after `after_seq` are not copied: an earlier one failed."""
        await self._record(_Blocked(key, after_seq, why), False)

    async def outcome(self, key: str, seq: int, state: State, replica_version_id: str = "", why: str = "") -> None:
        if self.manifest is None:
            return
        if not self._outcomes and not self._records:
            self._arrived()
        self._outcomes.append((int(state), replica_version_id, why, key, seq))
        if len(self._outcomes) == MAX_BATCH:
            self._wake.set()  # a full batch need not wait for its deadline
        elif len(self._outcomes) >= MAX_QUEUE:
            while len(self._outcomes) >= MAX_QUEUE and not self._closed:
                self._room = anyio.Event()
                await self._room.wait()

    async def fixed(
        self, key: str, vid: str, rvid: str, *, delete_marker: bool, outcomes: tuple[_Outcome, ...] = ()
    ) -> None:
        """The final copy of `key`'s current version was made (pipeline/replication.py), recorded in one
        transaction with `outcomes` (rvid "": the outcomes only)."""
        if self.manifest is not None:
            await self._record(_Fix(key, vid, rvid, delete_marker, outcomes), False)

    # The upload journal of s3.Copier.multipart_copy (see manifest.py).

    async def upload_begun(self, key: str) -> str:
        """Record a multipart upload about to be created for replica key `key`; its token, once committed."""
        token = uuid.uuid4().hex
        if self.manifest is not None:
            await self._record(_Upload(token, key, None, time.time()), True)
        return token

    async def upload_created(self, token: str, key: str, upload_id: str) -> None:
        """Record the upload's ID; return once committed (before its first part is copied)."""
        if self.manifest is not None:
            await self._record(_Upload(token, key, upload_id), True)

    async def upload_ended(self, token: str) -> None:
        """The upload was completed or aborted (not waited for: a leftover row costs one AbortMultipartUpload)."""
        if self.manifest is None:
            return
        await self._record(_Upload(token, ended=True), False)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._closed = True
        self._wake.set()
        self._room.set()

    async def run(self) -> None:
        while True:
            if not self._outcomes and not self._records:
                if self._closed:
                    return
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            if not self._urgent and not self._closed and len(self._outcomes) + len(self._records) < MAX_BATCH:
                # Outcomes may wait a little, to share a transaction: until the oldest has waited
                # MAX_DELAY, a batch is full, or a record is waited for (one timer per batch).
                remaining = self._since + MAX_DELAY - time.monotonic()
                if remaining > 0:
                    self._wake = anyio.Event()
                    with anyio.move_on_after(remaining):
                        await self._wake.wait()
                    continue
            records, self._records = self._records[:MAX_BATCH], self._records[MAX_BATCH:]
            n = MAX_BATCH - len(records)
            outcomes, self._outcomes = self._outcomes[:n], self._outcomes[n:]
            self._urgent -= sum(1 for m in records if _waited(m))
            self._since = time.monotonic()
            self._room.set()
            await anyio.to_thread.run_sync(self._commit, records, outcomes)
            for m in records:
                if isinstance(m, _Listed | _Spill | _Upload):
                    m.committed.set()

    def _commit(self, records: list[_Record], outcomes: list[_Outcome]) -> None:
        """One transaction; a durable one (fsynced) when it holds records: a page written ahead, an
        upload journalled. Outcomes alone need not be: one lost to a power cut leaves its version
        pending, which the next run checks against the replica before it copies (pipeline/resume.py)."""
        assert self.manifest is not None
        with self.manifest.transaction(durable=bool(records)) as c:
            for m in records:
                if isinstance(m, _Listed):
                    if m.settle:
                        Manifest.settle_spill(c, m.shard)
                    Manifest.write_listed(c, m.jobs, m.shard, m.marker, m.done)
                elif isinstance(m, _Spill):
                    Manifest.write_spill(c, m.shard, m.versions, m.first)
                elif isinstance(m, _Blocked):
                    Manifest.block_after(c, m.key, m.seq, m.why)
                elif isinstance(m, _Fix):
                    outcomes.extend(m.outcomes)
                    if m.rvid:
                        Manifest.write_fix(c, m.key, m.vid, m.rvid, m.dm)
                elif m.ended:
                    Manifest.forget_upload(c, m.token)
                else:
                    Manifest.write_upload(c, m.token, m.key, m.upload_id, m.started)
            Manifest.write_outcomes(c, outcomes)
            Manifest.set_job_value(c, "heartbeat", f"{time.time():.3f}")
