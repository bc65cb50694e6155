"""What earlier runs left unfinished, and when it is safe to look at it again.

A run that died with copies in flight may see them land after it restarted: S3 finishes
a request whose client has gone. So its unfinished versions are checked against the
replica only once such stragglers have had time to land (`settle_time`, counted from
the last write of the run that died), and before anything else the multipart uploads it
left open are aborted. The rows to revisit are read from a snapshot taken before this run
writes anything: rows the listers add from now on are theirs, never the resumer's too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from backfill.errors import BackfillError
from backfill.manifest import Manifest, OpenUpload
from backfill.models import KeyJob
from backfill.pipeline.checkpoint import Checkpoint
from backfill.pipeline.copier import SETTLE_RATE
from backfill.s3 import Copier

SETTLE_BASE = 10.0  # seconds any straggling request is given to land, before its size counts


def settle_time(largest: int, override: float | None = None) -> float:
    """How long copies left in flight may take to land: `override` (--settle-seconds), else
    10 s + 1 s per 20 MiB of the largest of them. The one rule of the runner and of the shard leases."""
    return override if override is not None else SETTLE_BASE + largest / SETTLE_RATE


class Resume:
    """The unfinished work of earlier runs, from a snapshot of the manifest taken at start."""

    def __init__(self, reader: Manifest, settle_until: float) -> None:
        self.reader = reader
        self.settle_until = settle_until  # wall clock before which stragglers may still land

    @classmethod
    def begin(cls, manifest: Manifest, settle_seconds: float | None) -> Resume:
        """Snapshot what earlier runs left, then mark the manifest as having copies in flight."""
        reader = manifest.snapshot()
        previous = reader.job()
        settle_until = 0.0
        if previous.get("clean", "1") != "1":
            # The last run died with copies in flight: wait for them from its last write (its heartbeat).
            settle = settle_time(reader.largest_unfinished(), settle_seconds)
            settle_until = float(previous.get("heartbeat", "0")) + settle
        manifest.set_clean(False)
        return cls(reader, settle_until)

    async def feed(
        self,
        jobs: MemoryObjectSendStream[KeyJob],
        *,
        shards: list[int],
        copier: Copier,
        checkpoint: Checkpoint,
        on_page: Callable[[list[KeyJob]], None],
        out: Any,
    ) -> None:
        """Send the unfinished keys of `shards` (each rechecked against the replica) into `jobs`, first
        waiting for stragglers and aborting leftover uploads. Closes `jobs` and the snapshot."""
        async with jobs:
            try:
                await self.settle_wait(out)
                await abort_leftover_uploads(copier, checkpoint, self.reader.open_uploads(), out)
                for shard_id in shards:
                    for job in self.reader.unfinished(shard_id):
                        on_page([job])
                        await jobs.send(job)
            finally:
                self.reader.close()

    async def settle_wait(self, out: Any) -> None:
        wait = self.settle_until - time.time()
        if wait > 0 and self.reader.unfinished_keys(1):
            print(
                f"the last run stopped abruptly: waiting {wait:.0f} s for copies it left in flight "
                "to land before checking its unfinished versions against the replica",
                file=out,
                flush=True,
            )
            await anyio.sleep(wait)


async def abort_leftover_uploads(copier: Copier, checkpoint: Checkpoint, uploads: list[OpenUpload], out: Any) -> None:
    """Abort the multipart uploads that earlier runs began and never completed or aborted."""
    aborted = 0
    for u in uploads:
        try:
            aborted += await copier.abort_leftover(u.key, u.upload_id, u.started)
        except BackfillError as exc:
            print(
                f"could not abort a multipart upload left open in the replica ({exc}): will try again next run",
                file=out,
                flush=True,
            )
            continue
        await checkpoint.upload_ended(u.token)
    if aborted:
        print(f"aborted {aborted} multipart upload(s) that the last run left open in the replica", file=out, flush=True)
