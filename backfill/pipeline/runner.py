"""One run of `backfill copy`: preflight, then the pipeline, then a result.

    shards ─► listers ×L ─┐                     ┌─► copiers ×M ─┐
    manifest (resume) ────┴─► bounded key stream ┘               └─► checkpoint writer ─► SQLite

Shutdown order: producers end (or are cancelled on Ctrl-C) → the key stream
closes → copiers drain → the writer's stream closes → the writer commits the
last batch. On Ctrl-C in-flight copies get `grace_seconds` to finish.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
from anyio import CancelScope
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from backfill.config import RunConfig
from backfill.errors import BackfillError, UserError
from backfill.manifest import Manifest, OpenUpload
from backfill.models import KeyJob, Shard, Version
from backfill.pacing import AdaptiveLimiter, Pacer, RateLimiter
from backfill.pipeline.checkpoint import Checkpoint
from backfill.pipeline.copier import SETTLE_RATE, Workers, copy_workers
from backfill.pipeline.lister import key_job, list_shard
from backfill.pipeline.shards import AUTO_TARGET, discover
from backfill.pipeline.streams import receive_all
from backfill.progress import Counters, Display
from backfill.s3 import LIST_POOL, Bucket, Copier, Sessions, open_bucket, reserve_open_files

MAX_LISTERS = 8


@dataclass(slots=True)
class ShardHooks:
    """How a caller that runs shards on its own (backfill.distributed) joins the pipeline.

    - `listed` runs after a page is written ahead to the manifest and before its keys are
      handed to the copiers (the shard lease records how far copies may have gone).
    - keys up to `recheck_upto[shard]` are checked against the replica before copying: an
      earlier attempt on another machine may have copied them after its last checkpoint.
    - `may_copy` is awaited before every copy (a lapsed lease waits for its renewal; False once lost).
    - `shutdown`, when set, stops the run gracefully as a first Ctrl-C does; `signals`
      False leaves signals alone (a worker thread cannot receive them).
    """

    listed: Callable[[int, list[KeyJob], str | None, bool], Awaitable[None]] | None = None
    recheck_upto: dict[int, str] = field(default_factory=dict)
    may_copy: Callable[[], Awaitable[bool]] | None = None
    shutdown: anyio.Event | None = None
    signals: bool = True
    display: bool = True


@dataclass(slots=True)
class RunResult:
    counters: Counters
    dry_run: bool
    interrupted: bool = False
    manifest: str = ""
    totals: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    limiter_cuts: int = 0
    concurrency: tuple[int, int, int] = (0, 0, 0)  # ceiling, lowest, highest after the lowest
    retries: int = 0
    writes_found_landed: int = 0  # writes whose answer was lost, found carried out (not sent again)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        failed = self.totals.get("failed", self.counters.failed) if not self.dry_run else 0
        return 1 if failed else 0


async def _preflight(cfg: RunConfig, src: Bucket, dst: Bucket) -> bool:
    """Refuse a replica without versioning: it cannot hold a history, nor be a replication target, and an
    overwrite there loses data. With --versions latest, --allow-unversioned copies the current versions anyway.
    Copies into `dst` also name the source's expected owner (--expected-source-owner)."""
    dst.expect_source_owner(cfg.source.expected_owner)
    # A dry run too: it answers "what would a run do?", and a real one would stop here.
    status = await dst.versioning()
    state = status.lower() or "off"
    if status != "Enabled" and cfg.options.versions == "all":
        raise UserError(
            f"replica bucket s3://{dst.name} has versioning {state}, so it cannot hold the source's history: "
            "enable versioning on it (`backfill setup` does), or pass --versions latest --allow-unversioned"
        )
    if status != "Enabled" and not cfg.allow_unversioned:
        raise UserError(
            f"replica bucket s3://{dst.name} has versioning {state}: enable it (replication needs it, and an "
            "overwrite there would lose data), or pass --allow-unversioned to copy the current versions anyway"
        )
    return await src.object_lock_enabled()


async def _abort_leftover_uploads(copier: Copier, checkpoint: Checkpoint, uploads: list[OpenUpload], out: Any) -> None:
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


async def run_copy(cfg: RunConfig, *, log: Any = None) -> RunResult:
    """Run (or resume) a backfill. Raises UserError for anything the user must fix."""
    out = log or sys.stderr
    counters = Counters()
    rate = RateLimiter(cfg.max_rps)
    limiter = AdaptiveLimiter(cfg.concurrency, floor=min(4, cfg.concurrency))
    list_pacer = Pacer(None, rate)
    copy_pacer = Pacer(limiter, rate)
    sessions = Sessions()  # the two sides share one session when they share a profile
    reserve_open_files(cfg.concurrency + 8)
    async with (
        open_bucket(cfg.source, "source", list_pacer, pool=LIST_POOL, sessions=sessions) as src,
        open_bucket(cfg.dest, "replica", copy_pacer, pool=cfg.concurrency + 8, sessions=sessions) as dst,
    ):
        carry_lock = await _preflight(cfg, src, dst)
        manifest: Manifest | None = None
        if not cfg.dry_run:
            manifest = Manifest.open(cfg.manifest, cfg.job_identity(), create=True)
        try:
            result = await _pipeline(cfg, src, dst, manifest, counters, carry_lock, out)
        finally:
            if manifest is not None:
                manifest.close()
        result.limiter_cuts = limiter.cuts
        result.concurrency = (limiter.ceiling, limiter.low, limiter.high_after_low)
        result.retries = list_pacer.retries + copy_pacer.retries
        result.writes_found_landed = copy_pacer.recovered
        return result


async def _pipeline(
    cfg: RunConfig,
    src: Bucket,
    dst: Bucket,
    manifest: Manifest | None,
    counters: Counters,
    carry_lock: bool,
    out: Any,
    hooks: ShardHooks | None = None,
) -> RunResult:
    hooks = hooks or ShardHooks()
    # Shards: the manifest's, or discovered now (and saved before any listing).
    first_run: datetime | None = None
    saved = manifest.shards() if manifest is not None else []
    if manifest is not None and saved:
        plan = saved
        first = manifest.job().get("first_run_started")
        first_run = datetime.fromisoformat(first) if first else None
    else:
        target = cfg.shards or AUTO_TARGET
        shards = await discover(src, cfg.source.url.prefix, target)
        plan = [(s, None, False) for s in shards]
        first_run = datetime.now(UTC)
        if manifest is not None:
            manifest.save_shards(shards)
            with manifest.transaction() as c:
                c.execute("INSERT OR REPLACE INTO job VALUES ('first_run_started', ?)", (first_run.isoformat(),))
    counters.shards = len(plan)
    counters.shards_listed = sum(1 for _, _, listed in plan if listed)
    to_list = [(s, marker) for s, marker, listed in plan if not listed]
    resumable = [s.id for s, _, _ in plan] if manifest is not None else []

    latest_only = cfg.options.versions == "latest"

    def make_job(shard: int, newest_first: list[Version]) -> KeyJob | None:
        job = key_job(
            shard, newest_first, src_prefix=cfg.source.url.prefix, latest_only=latest_only, filters=cfg.filters
        )
        upto = hooks.recheck_upto.get(shard)
        if job is not None and upto is not None and job.key <= upto:
            job.recheck = True  # past the checkpoint, but an earlier attempt may have copied it
        return job

    async def record(shard: int, jobs: list[KeyJob], marker: str | None, done: bool) -> None:
        await checkpoint.listed(shard, jobs, marker, done)
        if hooks.listed is not None and manifest is not None:
            await hooks.listed(shard, jobs, marker, done)

    def on_page(jobs: list[KeyJob]) -> None:
        for j in jobs:
            counters.listed += len(j.items)
            counters.listed_bytes += sum(it.version.size for it in j.items)

    checkpoint = Checkpoint(manifest)
    stop = anyio.Event()
    interrupted = False
    copier = Copier(src, dst, cfg.options, carry_lock, journal=checkpoint)
    workers = Workers(copier, checkpoint, counters, stop, cfg.source.url.prefix, cfg.dest.url.prefix, first_run)
    workers.may_copy = hooks.may_copy
    key_send, key_recv = anyio.create_memory_object_stream[KeyJob](cfg.concurrency * 4)
    shard_send, shard_recv = anyio.create_memory_object_stream[tuple[Shard, str | None]](len(to_list) or 1)
    for item in to_list:
        shard_send.send_nowait(item)
    shard_send.close()

    async def lister(
        shards: MemoryObjectReceiveStream[tuple[Shard, str | None]], jobs: MemoryObjectSendStream[KeyJob]
    ) -> None:
        async with shards, jobs:
            async for shard, marker in shards:
                await list_shard(src, shard, marker, record=record, out=jobs, make_job=make_job, on_page=on_page)
                counters.shards_listed += 1

    # What earlier runs left unfinished, read from a snapshot taken before this run writes
    # anything: rows the listers add from now on are theirs, never the resumer's too.
    reader = manifest.snapshot() if manifest is not None else None
    settle_until = 0.0
    if manifest is not None and reader is not None:
        previous = reader.job()
        if previous.get("clean", "1") != "1":
            # The last run died with copies in flight. S3 finishes a request whose client
            # has gone, possibly well after a restart: check those versions against the
            # replica only once such stragglers have landed.
            largest = reader.largest_unfinished()
            settle = cfg.settle_seconds if cfg.settle_seconds is not None else 10 + largest / SETTLE_RATE
            settle_until = float(previous.get("heartbeat", "0")) + settle
        with manifest.transaction() as c:
            Manifest.set_job_value(c, "clean", "0")

    async def resumer(jobs: MemoryObjectSendStream[KeyJob]) -> None:
        """Unfinished versions of earlier runs go first (each key rechecked against the replica)."""
        async with jobs:
            if reader is None:
                return
            try:
                wait = settle_until - time.time()
                if wait > 0 and reader.unfinished_keys(1):
                    print(
                        f"the last run stopped abruptly: waiting {wait:.0f} s for copies it left in flight "
                        "to land before checking its unfinished versions against the replica",
                        file=out,
                        flush=True,
                    )
                    await anyio.sleep(wait)
                await _abort_leftover_uploads(copier, checkpoint, reader.open_uploads(), out)
                for shard_id in resumable:
                    for job in reader.unfinished(shard_id):
                        on_page([job])
                        await jobs.send(job)
            finally:
                reader.close()

    async def dry_run_counter(jobs: MemoryObjectReceiveStream[KeyJob]) -> None:
        async with jobs:
            async for job in receive_all(jobs):
                for it in job.items:
                    counters.delete_markers += it.version.is_delete_marker

    listing_scope = CancelScope()
    pipeline_scope = CancelScope()

    def begin_stop(message: bool) -> None:
        nonlocal interrupted
        interrupted = True
        stop.set()
        listing_scope.cancel()
        if message:
            print(
                f"\nstopping: letting in-flight copies finish (up to {cfg.grace_seconds:.0f} s); "
                "Ctrl-C again to stop now",
                file=out,
                flush=True,
            )
        pipeline_scope.deadline = anyio.current_time() + cfg.grace_seconds

    async def watch_signals() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if interrupted:
                    pipeline_scope.cancel()
                    return
                begin_stop(True)

    async def watch_shutdown(event: anyio.Event) -> None:
        await event.wait()
        begin_stop(False)

    error: Exception | None = None
    async with anyio.create_task_group() as outer:
        outer.start_soon(checkpoint.run)
        try:
            async with anyio.create_task_group() as background:
                if hooks.signals:
                    background.start_soon(watch_signals)
                if hooks.shutdown is not None:
                    background.start_soon(watch_shutdown, hooks.shutdown)
                if hooks.display:
                    background.start_soon(Display(counters, "backfill", cfg.progress_interval, out).run)
                with pipeline_scope:
                    async with anyio.create_task_group() as pipeline:
                        if cfg.dry_run:
                            pipeline.start_soon(dry_run_counter, key_recv)
                        else:
                            pipeline.start_soon(copy_workers, workers, key_recv, cfg.concurrency)
                        async with key_send, shard_recv:
                            with listing_scope:
                                async with anyio.create_task_group() as producers:
                                    producers.start_soon(resumer, key_send.clone())
                                    for _ in range(min(MAX_LISTERS, len(to_list))):
                                        producers.start_soon(lister, shard_recv.clone(), key_send.clone())
                background.cancel_scope.cancel()
        except Exception as exc:
            error = exc
        finally:
            await checkpoint.close()
    if error is not None:
        raise error
    if manifest is not None and not pipeline_scope.cancelled_caught:
        with manifest.transaction() as c:
            Manifest.set_job_value(c, "clean", "1")  # no copy was abandoned in flight

    result = RunResult(counters, cfg.dry_run, interrupted, cfg.manifest if manifest else "")
    if manifest is not None:
        result.totals = manifest.summary().totals()
        result.reasons = manifest.reasons()
    return result
