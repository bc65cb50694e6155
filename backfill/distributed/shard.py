"""One attempt at one shard, on any machine: lease, checkpoints, and the ordinary pipeline.

Engines (Dask, a Kubernetes Indexed Job, AWS Batch) run a shard at least once, maybe
twice at the same time, and a machine can die at any point. The shard's state lives
in the state location (distributed.store), and this protocol keeps a version from being
copied twice:

1. Claim. An attempt reads the shard's lease. Absent: create it (If-None-Match: *),
   generation 1. Released by an attempt that finished: claim it (If-Match), after
   `settle` if that attempt had copies in flight when it stopped; a released lease that
   says complete means there is nothing to do. Held: wait. A live holder rewrites the
   lease every lease_seconds/4, so an ETag that does not change for lease_seconds (on
   this machine's clock) means the holder is gone; only then claim (If-Match on that
   ETag: of several claimants one wins), and wait `settle` more for the copies the dead
   holder had in flight to land.
2. Hold. Before the copiers get a listed page, the holder records in the lease how far
   copies may go (`listed_upto`, the page's last key), with If-Match on its last ETag.
   It renews the lease every lease_seconds/4. It starts a copy only while its last
   successful lease write was sent less than lease_seconds ago (on a clock that counts
   suspend); past that, copies wait for a renewal to succeed. It stops at once when a
   lease write fails with a conflict: a claimant has taken over. (A renewal after a
   lapse is safe: it and a claimant's takeover are both If-Match on the same ETag, so
   only one of them succeeds.) So when a claimant takes over, the old holder has started no copy for
   lease_seconds and its last copies have had `settle` to land.
3. Checkpoint. The shard's SQLite file (the manifest's schema, this shard's rows) is
   written ahead and updated as in a single-machine run; every checkpoint_seconds, and
   at the end, a consistent copy of it is uploaded as shards/NNNNN.gGGGGGG.db (a name
   only this generation writes) and the lease is pointed at it (If-Match).
4. Resume. A new generation downloads the checkpoint the lease names. Its pending and
   failed versions are checked against the replica before copying (as after a local
   crash); keys after the checkpoint's marker and up to the lease's `listed_upto` are
   listed again and checked against the replica too (an earlier generation may have
   copied them after its last checkpoint); keys after `listed_upto` were never handed
   to a copier and are copied normally.

The lease itself (steps 1 and 2) is distributed.lease; this module is the attempt.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio

from backfill.config import RunConfig
from backfill.distributed.store import Store, checkpoint_name
from backfill.errors import RetryableError, StopRun, UserError
from backfill.manifest import Manifest
from backfill.models import Shard
from backfill.pipeline.run import Hooks, RunResult, run_pipeline
from backfill.pipeline.sides import PaceStats, Sides
from backfill.progress import Counters

from .lease import Claim, LeaseLost, ShardSettings, claim

# Test hook, for the tests only: "SHARD:N" makes the first attempt (generation 1) of shard
# SHARD end its process with os._exit after N copies, as a machine that dies would.
TEST_DIE_AFTER = "BACKFILL_TEST_DIE_AFTER"


@dataclass(slots=True)
class ShardOutcome:
    shard: int
    totals: dict[str, int]
    reasons: dict[str, int]
    counters: Counters
    generation: int = 0
    already_complete: bool = False
    interrupted: bool = False
    # Set by the driver that opened the sides for this attempt alone (a Dask task); None when
    # the sides are shared with other shards (run_here reports theirs once, for all of them).
    pacing: PaceStats | None = None

    @property
    def first_copy_wall(self) -> float | None:
        """Wall-clock time of this attempt's first copy (a job's first copy is the earliest of them)."""
        c = self.counters
        return None if c.first_copy_at is None else time.time() - c.elapsed() + c.first_copy_at


def _die_after(shard: int, generation: int) -> int | None:
    spec = os.environ.get(TEST_DIE_AFTER, "")
    if not spec:
        return None
    which, _, n = spec.partition(":")
    return int(n) if int(which) == shard and generation == 1 else None


async def run_shard(
    cfg: RunConfig,
    identity: dict[str, str],
    created: str,
    shard: Shard,
    store: Store,
    sides: Sides,
    settings: ShardSettings,
    *,
    out: Any,
    counters: Counters | None = None,
    shutdown: anyio.Event | None = None,
    signals: bool = False,
    display: bool = False,
) -> ShardOutcome:
    """One attempt at one shard. Raises LeaseLost if another attempt took over, UserError as usual."""
    counters = counters if counters is not None else Counters()

    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    got = await claim(store, shard.id, settings, say)
    if got.holder is None:
        assert got.previous is not None
        return ShardOutcome(shard.id, got.previous.totals, {}, counters, got.previous.generation, True)
    attempt = _Attempt(cfg, shard, store, settings, got, counters, say)
    try:
        with tempfile.TemporaryDirectory(prefix=f"backfill-shard-{shard.id}-") as tmp:
            outcome = await attempt.run(
                Path(tmp), identity, created, sides, out, shutdown=shutdown, signals=signals, display=display
            )
    except BaseException:
        await attempt.hand_on()
        raise
    await attempt.remove_older_checkpoints()
    return outcome


class _Attempt:
    """The claimed shard: its local file, its checkpoints, and the pipeline under the lease."""

    def __init__(
        self,
        cfg: RunConfig,
        shard: Shard,
        store: Store,
        settings: ShardSettings,
        got: Claim,
        counters: Counters,
        say: Callable[[str], None],
    ) -> None:
        assert got.holder is not None
        self.cfg, self.shard, self.store, self.settings = cfg, shard, store, settings
        self.holder, self.prev, self.settle = got.holder, got.previous, got.settle
        self.counters, self.say = counters, say
        self.generation = self.holder.lease.generation
        self.mine = checkpoint_name(shard.id, self.generation)
        self.stopping = anyio.Event()
        self.stopped_by: StopRun | None = None  # the state location gone past --outage-timeout, expired credentials
        self.path = Path()
        self.snap = Path()
        self.manifest: Manifest | None = None

    async def _open(self, tmp: Path, identity: dict[str, str], created: str) -> Manifest:
        """The previous generation's checkpoint, or a new file holding only this shard."""
        self.path, self.snap = tmp / "shard.db", tmp / "upload.db"
        prev = self.prev
        if prev is not None and prev.checkpoint and not await self.store.download(prev.checkpoint, self.path):
            raise UserError(
                f"the lease of shard {self.shard.id} names the checkpoint {prev.checkpoint}, which is missing from "
                f"{self.store.url}: the state location was changed by hand; start the job again in a new --state"
            )
        fresh = not self.path.exists()
        manifest = Manifest.open(str(self.path), identity, create=True)
        if fresh:
            manifest.save_shards([self.shard])
            manifest.set_first_run_started(created)
        self.manifest = manifest
        return manifest

    async def checkpoint(self, **changes: Any) -> None:
        """Upload a consistent copy of the shard file under this generation's name; point the lease at it."""
        assert self.manifest is not None
        await anyio.to_thread.run_sync(self.manifest.snapshot_to, self.snap)
        await self.store.upload(self.mine, self.snap)
        await self.holder.write(checkpoint=self.mine, **changes)

    async def _stop_on(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run a background task of the lease; a StopRun from it stops the pipeline gracefully (as Ctrl-C)
        and is raised when the attempt has stopped."""
        try:
            await task()
        except StopRun as exc:
            self.stopped_by = self.stopped_by or exc
            self.stopping.set()

    async def _periodic(self) -> None:
        with contextlib.suppress(LeaseLost):  # _relay stops the run
            while True:
                await anyio.sleep(self.settings.checkpoint_seconds)
                try:
                    await self.checkpoint()
                except RetryableError as exc:
                    self.say(f"shard {self.shard.id}: checkpoint upload failed, trying again later: {exc}")

    async def _relay(self, event: anyio.Event) -> None:
        """A lost lease (or the caller's shutdown) stops the pipeline; may_copy already lets no copy start."""
        await event.wait()
        self.stopping.set()

    async def _test_die(self, after: int) -> None:
        while self.counters.copied < after:  # noqa: ASYNC110 - a test hook polls the counters
            await anyio.sleep(0.005)
        os._exit(137)  # the test hook: a machine that dies mid-shard

    async def run(
        self,
        tmp: Path,
        identity: dict[str, str],
        created: str,
        sides: Sides,
        out: Any,
        *,
        shutdown: anyio.Event | None,
        signals: bool,
        display: bool,
    ) -> ShardOutcome:
        holder, prev, shard = self.holder, self.prev, self.shard
        manifest = await self._open(tmp, identity, created)
        try:
            hooks = Hooks(
                listed=holder.listed,
                recheck_upto={shard.id: prev.listed_upto} if prev is not None and prev.listed_upto else {},
                may_copy=holder.may_copy,
                shutdown=self.stopping,
                signals=signals,
                display=display,
            )
            # The lease protocol did the settle wait; the runner's own (from the file's heartbeat,
            # written on another machine's clock) is not needed.
            run_cfg = replace(self.cfg, manifest=str(self.path), settle_seconds=0.0)
            die_after = _die_after(shard.id, self.generation)
            result: RunResult | None = None
            error: Exception | None = None
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._stop_on, holder.keep_alive)
                tg.start_soon(self._relay, holder.lost_event)
                if shutdown is not None:
                    tg.start_soon(self._relay, shutdown)
                if self.settle > 0:
                    self.say(
                        f"shard {shard.id}: generation {self.generation} waits {self.settle:.0f} s for copies the "
                        "previous attempt left in flight to land before checking them against the replica"
                    )
                    with anyio.move_on_after(self.settle):
                        await self.stopping.wait()
                if not self.stopping.is_set():
                    tg.start_soon(self._stop_on, self._periodic)
                    if die_after is not None:
                        tg.start_soon(self._test_die, die_after)
                    try:
                        result = await run_pipeline(run_cfg, sides, manifest, self.counters, hooks, out)
                    except Exception as exc:
                        error = exc
                tg.cancel_scope.cancel()
            if holder.lost:
                raise LeaseLost(f"shard {shard.id}: another attempt took the lease over (or the lease lapsed)")
            error = error or self.stopped_by
            totals = manifest.summary().totals()
            if error is not None:
                # Hand the shard on at once (no lease to wait out), with what this attempt did.
                with contextlib.suppress(Exception):
                    await self.checkpoint(state="released", clean=False, complete=False, totals=totals)
                raise error
            clean = manifest.job().get("clean") == "1"
            complete = totals["shards_listed"] == totals["shards"] and totals["pending"] == 0 and totals["failed"] == 0
            await self.checkpoint(state="released", clean=clean, complete=complete, totals=totals)
            reasons = manifest.reasons()
        finally:
            manifest.close()
        interrupted = result.interrupted if result is not None else True
        return ShardOutcome(shard.id, totals, reasons, self.counters, self.generation, False, interrupted)

    async def hand_on(self) -> None:
        """Cancelled or failed before releasing: release now, so that the next attempt waits only for
        copies that may still be in flight, not for the lease to lapse."""
        if self.holder.lost or self.holder.lease.state != "held":
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(10), contextlib.suppress(Exception):
            await self.holder.write(state="released", clean=False, complete=False)

    async def remove_older_checkpoints(self) -> None:
        """Earlier generations' files are superseded by ours (a late writer's leftovers too).

        Only older ones: a newer generation may already have claimed the released shard.
        """
        prefix = f"shards/{self.shard.id:05d}.g"
        with contextlib.suppress(Exception):  # tidying only
            for name in await self.store.names(prefix):
                gen = name[len(prefix) :].removesuffix(".db")
                if gen.isdigit() and int(gen) < self.generation:
                    await self.store.delete(name)
