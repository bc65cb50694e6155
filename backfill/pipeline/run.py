"""The copy engine: shards → listers → copiers → checkpoint writer, on a pair of opened sides.

    shards ─► listers ×L ─┐                     ┌─► copiers ×M ─┐
    manifest (resume) ────┴─► bounded key stream ┘               └─► checkpoint writer ─► SQLite

Shutdown order: producers end (or are cancelled on Ctrl-C) → the key stream
closes → copiers drain → the writer's stream closes → the writer commits the
last batch. On Ctrl-C in-flight copies get `grace_seconds` to finish.

`run_pipeline` is the one entry point; its drivers are the single-machine run
(pipeline.runner.run_copy) and a shard attempt of a multi-shard job (distributed.shard).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
from anyio import CancelScope
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from backfill.config import RunConfig
from backfill.manifest import Manifest
from backfill.models import KeyJob, Shard, Version
from backfill.pipeline.checkpoint import Checkpoint
from backfill.pipeline.copier import Workers, copy_workers
from backfill.pipeline.costing import count, new_tally, priced
from backfill.pipeline.lister import key_job, list_shard
from backfill.pipeline.resume import Resume
from backfill.pipeline.shards import AUTO_TARGET, discover
from backfill.pipeline.sides import PaceStats, Sides
from backfill.pipeline.stopping import Stopper
from backfill.pipeline.streams import receive_all
from backfill.progress import Counters, Display
from backfill.s3 import Bucket, Copier

if TYPE_CHECKING:
    from backfill.pipeline.inventory_source import InventorySource

MAX_LISTERS = 8


@dataclass(slots=True)
class Hooks:
    """How a driver that runs shards on its own (backfill.distributed) joins the pipeline.

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
    pacing: PaceStats = field(default_factory=PaceStats)  # filled in by the driver that owns the sides
    estimate: dict[str, Any] | None = None  # a dry run's estimate (estimate.Estimate.to_json)
    estimate_lines: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        failed = self.totals.get("failed", self.counters.failed) if not self.dry_run else 0
        return 1 if failed else 0


Plan = list[tuple[Shard, str | None, bool]]  # (shard, resume marker, listed), as the manifest keeps them


async def _plan(
    cfg: RunConfig,
    src: Bucket,
    manifest: Manifest | None,
    inventory: InventorySource | None = None,
    discovered: list[Shard] | None = None,
) -> tuple[Plan, datetime | None]:
    """The shards (with resume marker and whether listed) and when the job first started:
    the manifest's, or discovered now (and saved before any listing)."""
    saved = manifest.shards() if manifest is not None else []
    if manifest is not None and saved:
        first = manifest.job().get("first_run_started")
        return saved, datetime.fromisoformat(first) if first else None
    if inventory is not None:
        shards = inventory.shards()
    else:
        # `discovered`: the shards open_sides found while the preflight ran (the same discovery)
        shards = discovered or await discover(src, cfg.source.url.prefix, cfg.shards or AUTO_TARGET)
    first_run = datetime.now(UTC)
    if manifest is not None:
        manifest.save_shards(shards)
        manifest.set_first_run_started(first_run.isoformat())
    return [(s, None, False) for s in shards], first_run


class _Producers:
    """What feeds the copiers: listers over the shards still to list, and the resumer."""

    def __init__(
        self,
        cfg: RunConfig,
        sides: Sides,
        plan: Plan,
        copier: Copier,
        checkpoint: Checkpoint,
        counters: Counters,
        hooks: Hooks,
    ) -> None:
        self.cfg, self.plan, self.copier, self.checkpoint = cfg, plan, copier, checkpoint
        self.counters, self.hooks = counters, hooks
        self.record_hook = hooks.listed
        self.tally = new_tally(cfg, sides)
        self.inventory: InventorySource | None = None

    def make_job(self, shard: int, newest_first: list[Version]) -> KeyJob | None:
        cfg = self.cfg
        job = key_job(
            shard,
            newest_first,
            src_prefix=cfg.source.url.prefix,
            latest_only=cfg.options.versions == "latest",
            filters=cfg.filters,
        )
        upto = self.hooks.recheck_upto.get(shard)
        if job is not None and upto is not None and job.key <= upto:
            job.recheck = True  # past the checkpoint, but an earlier attempt may have copied it
        return job

    async def record(self, shard: int, jobs: list[KeyJob], marker: str | None, done: bool) -> None:
        await self.checkpoint.listed(shard, jobs, marker, done)
        if self.record_hook is not None:
            await self.record_hook(shard, jobs, marker, done)

    def on_page(self, jobs: list[KeyJob]) -> None:
        count(self.tally, jobs)
        for j in jobs:
            self.counters.listed_by_shard[j.shard] = self.counters.listed_by_shard.get(j.shard, 0) + len(j.items)
            self.counters.listed += len(j.items)
            self.counters.listed_bytes += sum(it.version.size for it in j.items)

    async def lister(
        self, shards: MemoryObjectReceiveStream[tuple[Shard, str | None]], jobs: MemoryObjectSendStream[KeyJob]
    ) -> None:
        async with shards, jobs:
            async for shard, marker in shards:
                await list_shard(
                    self.copier.source,
                    shard,
                    marker,
                    record=self.record,
                    out=jobs,
                    make_job=self.make_job,
                    on_page=self.on_page,
                    pages=self.inventory.pages if self.inventory is not None else None,
                    # a long history waits in the manifest (a latest-only copy keeps only a key's newest)
                    history=self.checkpoint.history if self.cfg.options.versions != "latest" else None,
                )
                self.counters.shards_listed += 1
                self.counters.finished_shards.add(shard.id)

    async def resumer(self, resume: Resume, jobs: MemoryObjectSendStream[KeyJob], out: Any) -> None:
        """Unfinished versions of earlier runs go first (each key rechecked against the replica)."""
        shards = [s.id for s, _, _ in self.plan]
        await resume.feed(
            jobs,
            shards=shards,
            copier=self.copier,
            checkpoint=self.checkpoint,
            on_page=self.on_page,
            out=out,
            dry_run=self.cfg.dry_run,
        )


class _Notice:
    """The estimate's one line, printed once it is known and a first copy has worked."""

    def __init__(self, counters: Counters, out: Any) -> None:
        self.counters, self.out = counters, out
        self.line: str | None = None

    def say(self) -> None:
        if self.line is not None and self.counters.copied > 0:
            print(self.line, file=self.out, flush=True)
            self.line = None

    async def run(self) -> None:
        while True:
            self.say()
            await anyio.sleep(0.1)


async def _count_dry_run(counters: Counters, jobs: MemoryObjectReceiveStream[KeyJob]) -> None:
    async with jobs:
        async for job in receive_all(jobs):
            for it in job.items:
                counters.delete_markers += it.version.is_delete_marker


async def run_pipeline(
    cfg: RunConfig,
    sides: Sides,
    manifest: Manifest | None,
    counters: Counters,
    hooks: Hooks | None = None,
    out: Any = None,
) -> RunResult:
    """Run (or resume) the copy of `cfg`'s shards into `manifest` (None: a dry run).

    The result's `pacing` is left to the caller: the sides may be shared by several runs.
    """
    out = out or sys.stderr
    hooks = hooks or Hooks()
    if sides.health is not None and counters.status is None:
        counters.status = sides.health.status
    inventory: InventorySource | None = None
    if cfg.inventory is not None:
        from backfill.pipeline.inventory_source import open_inventory  # the inventory's reader, for such a run only

        inventory = await open_inventory(cfg, sides)
    notice = _Notice(counters, out)
    if inventory is not None and not cfg.dry_run and not cfg.quiet:
        line = priced(cfg, sides, inventory.tally, shards=len(inventory.shards()), remaining=False).one_line()
        notice.line = f"{line} (from the inventory)"
    if inventory is not None:
        counters.known_total = inventory.tally.versions
    counters.pacing = lambda: sides.pacing().as_dict() | {"concurrency_now": sides.limiter.limit}
    resumed = manifest is not None and bool(manifest.shards())  # the estimate is of what is left
    plan, first_run = await _plan(cfg, sides.src, manifest, inventory, sides.shards)
    counters.shards = len(plan)
    counters.shards_listed = sum(1 for _, _, listed in plan if listed)
    to_list = [(s, marker) for s, marker, listed in plan if not listed]

    checkpoint = Checkpoint(manifest)
    copier = Copier(sides.src, sides.dst, cfg.options, sides.carry_lock, journal=checkpoint)

    def expired_retention() -> None:
        counters.expired_retentions += 1

    copier.on_expired_retention = expired_retention
    producers = _Producers(cfg, sides, plan, copier, checkpoint, counters, hooks)
    producers.inventory = inventory
    if manifest is None:
        producers.record_hook = None  # a dry run records nothing, in the lease neither
    listing_scope = CancelScope()
    pipeline_scope = CancelScope()
    stopper = Stopper(cfg.grace_seconds, out, pipeline_scope, halt=[listing_scope])
    workers = Workers(
        copier, checkpoint, counters, stopper.requested, cfg.source.url.prefix, cfg.dest.url.prefix, first_run
    )
    workers.may_copy = hooks.may_copy
    workers.replication = sides.replication
    key_send, key_recv = anyio.create_memory_object_stream[KeyJob](cfg.concurrency * 4)
    shard_send, shard_recv = anyio.create_memory_object_stream[tuple[Shard, str | None]](len(to_list) or 1)
    for item in to_list:
        shard_send.send_nowait(item)
    shard_send.close()
    resume = Resume.begin(manifest, cfg.settle_seconds) if manifest is not None else None

    error: Exception | None = None
    async with anyio.create_task_group() as outer:
        outer.start_soon(checkpoint.run)
        try:
            async with anyio.create_task_group() as background:
                if hooks.signals:
                    background.start_soon(stopper.watch_signals)
                if hooks.shutdown is not None:
                    background.start_soon(stopper.follow, hooks.shutdown)
                if hooks.display and not cfg.quiet:
                    display = Display(counters, "backfill", cfg.progress_interval, out, fmt=cfg.log_format)
                    background.start_soon(display.run)
                background.start_soon(notice.run)
                with pipeline_scope:
                    async with anyio.create_task_group() as pipeline:
                        if cfg.dry_run:
                            pipeline.start_soon(_count_dry_run, counters, key_recv)
                        else:
                            pipeline.start_soon(copy_workers, workers, key_recv, cfg.concurrency)
                        async with key_send, shard_recv:
                            with listing_scope:
                                async with anyio.create_task_group() as feeding:
                                    if resume is not None:
                                        feeding.start_soon(producers.resumer, resume, key_send.clone(), out)
                                    for _ in range(min(MAX_LISTERS, len(to_list))):
                                        feeding.start_soon(producers.lister, shard_recv.clone(), key_send.clone())
                            if not cfg.dry_run and inventory is None and not cfg.quiet and not stopper.interrupted:
                                e = priced(cfg, sides, producers.tally, shards=len(plan), remaining=resumed)
                                notice.line = f"{e.one_line()} (listing done)"
                notice.say()  # once a copy has worked: a run refused at its first copy keeps to one line
                background.cancel_scope.cancel()
        except Exception as exc:
            error = exc
        finally:
            await checkpoint.close()
    if error is not None:
        raise error
    if manifest is not None and not pipeline_scope.cancelled_caught:
        manifest.set_clean(True)  # no copy was abandoned in flight

    result = RunResult(counters, cfg.dry_run, stopper.interrupted, cfg.manifest if manifest else "")
    if cfg.dry_run:
        e = priced(cfg, sides, producers.tally, shards=len(plan), remaining=resumed)
        result.estimate, result.estimate_lines = e.to_json(), e.lines()
    if manifest is not None:
        result.totals = manifest.summary().totals()
        result.reasons = manifest.reasons()
    return result
