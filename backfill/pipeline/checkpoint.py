"""The single manifest writer: messages from listers and copiers → batched transactions.

Listers wait for their page to be committed (write-ahead: a version is in the
manifest before its copy starts); copiers do not wait for their outcomes.
"""

from __future__ import annotations

import time
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


_Outcome = tuple[int, str, str, str, int]  # state, replica version id, why, key, seq


class Checkpoint:
    def __init__(self, manifest: Manifest | None) -> None:
        self.manifest = manifest
        send, recv = anyio.create_memory_object_stream[_Listed | _Outcome](1024)
        self._send: MemoryObjectSendStream[_Listed | _Outcome] = send
        self._recv: MemoryObjectReceiveStream[_Listed | _Outcome] = recv

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
                urgent = isinstance(first, _Listed)  # a lister waits for this commit
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
                    urgent = urgent or isinstance(m, _Listed)
                await anyio.to_thread.run_sync(self._commit, batch)
                for m in batch:
                    if isinstance(m, _Listed):
                        m.committed.set()

    def _commit(self, batch: list[_Listed | _Outcome]) -> None:
        assert self.manifest is not None
        outcomes: list[_Outcome] = []
        with self.manifest.transaction() as c:
            for m in batch:
                if isinstance(m, _Listed):
                    Manifest.write_listed(c, m.jobs, m.shard, m.marker, m.done)
                else:
                    outcomes.append(m)
            Manifest.write_outcomes(c, outcomes)
            Manifest.set_job_value(c, "heartbeat", f"{time.time():.3f}")
