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
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from backfill.manifest import Manifest
from backfill.models import KeyJob, State
from backfill.pipeline.streams import send

MAX_BATCH = 5000  # rows per transaction
MAX_DELAY = 0.5  # seconds an outcome may wait for its transaction (each commit is an fsync)
TICK = 0.02  # seconds between looks at the queue while a batch fills


@dataclass(slots=True)
class _Listed:
    shard: int
    jobs: list[KeyJob]
    marker: str | None
    done: bool
    committed: anyio.Event = field(default_factory=anyio.Event)


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


_Message = _Listed | _Outcome | _Upload | _Fix


class Checkpoint:
    def __init__(self, manifest: Manifest | None) -> None:
        self.manifest = manifest
        send, recv = anyio.create_memory_object_stream[_Message](1024)
        self._send: MemoryObjectSendStream[_Message] = send
        self._recv: MemoryObjectReceiveStream[_Message] = recv

    async def listed(self, shard: int, jobs: list[KeyJob], marker: str | None, done: bool) -> None:
        """Record a page's keys as pending (and the shard's marker); return once committed."""
        if self.manifest is None:  # dry run
            return
        msg = _Listed(shard, jobs, marker, done)
        await self._send.send(msg)
        await msg.committed.wait()

    async def outcome(self, key: str, seq: int, state: State, replica_version_id: str = "", why: str = "") -> None:
        if self.manifest is None:
            return
        await send(self._send, (int(state), replica_version_id, why, key, seq))

    async def fixed(
        self, key: str, vid: str, rvid: str, *, delete_marker: bool, outcomes: tuple[_Outcome, ...] = ()
    ) -> None:
        """The final copy of `key`'s current version was made (pipeline/replication.py), recorded in one
        transaction with `outcomes` (rvid "": the outcomes only)."""
        if self.manifest is not None:
            await send(self._send, _Fix(key, vid, rvid, delete_marker, outcomes))

    # The upload journal of s3.Copier.multipart_copy (see manifest.py).

    async def upload_begun(self, key: str) -> str:
        """Record a multipart upload about to be created for replica key `key`; its token, once committed."""
        token = uuid.uuid4().hex
        if self.manifest is not None:
            msg = _Upload(token, key, None, time.time())
            await self._send.send(msg)
            await msg.committed.wait()
        return token

    async def upload_created(self, token: str, key: str, upload_id: str) -> None:
        """Record the upload's ID; return once committed (before its first part is copied)."""
        if self.manifest is not None:
            msg = _Upload(token, key, upload_id)
            await self._send.send(msg)
            await msg.committed.wait()

    async def upload_ended(self, token: str) -> None:
        """The upload was completed or aborted (not waited for: a leftover row costs one AbortMultipartUpload)."""
        if self.manifest is None:
            return
        msg = _Upload(token, ended=True)
        try:
            self._send.send_nowait(msg)
        except anyio.WouldBlock:
            await self._send.send(msg)

    async def close(self) -> None:
        await self._send.aclose()

    async def run(self) -> None:
        async with self._recv:
            closed = False
            while not closed:
                try:
                    first = await self._recv.receive()
                except anyio.EndOfStream:
                    return
                batch = [first]
                urgent = isinstance(first, _Listed | _Upload)  # a lister or a copier waits for this commit
                deadline = time.monotonic() + MAX_DELAY
                while len(batch) < MAX_BATCH:
                    try:
                        m = self._recv.receive_nowait()
                    except anyio.WouldBlock:
                        remaining = deadline - time.monotonic()
                        if urgent or remaining <= 0:
                            break
                        # Outcomes may wait a little, to share a transaction; poll rather
                        # than arm a timeout per message (this loop runs per copy).
                        await anyio.sleep(min(remaining, TICK))
                        continue
                    except anyio.EndOfStream:
                        closed = True
                        break
                    batch.append(m)
                    urgent = urgent or isinstance(m, _Listed | _Upload)
                await anyio.to_thread.run_sync(self._commit, batch)
                for m in batch:
                    if isinstance(m, _Listed | _Upload):
                        m.committed.set()

    def _commit(self, batch: list[_Message]) -> None:
        assert self.manifest is not None
        outcomes: list[_Outcome] = []
        with self.manifest.transaction() as c:
            for m in batch:
                if isinstance(m, _Listed):
                    Manifest.write_listed(c, m.jobs, m.shard, m.marker, m.done)
                elif isinstance(m, _Fix):
                    outcomes.extend(m.outcomes)
                    if m.rvid:
                        Manifest.write_fix(c, m.key, m.vid, m.rvid, m.dm)
                elif isinstance(m, _Upload):
                    if m.ended:
                        Manifest.forget_upload(c, m.token)
                    else:
                        Manifest.write_upload(c, m.token, m.key, m.upload_id, m.started)
                else:
                    outcomes.append(m)
            Manifest.write_outcomes(c, outcomes)
            Manifest.set_job_value(c, "heartbeat", f"{time.time():.3f}")
