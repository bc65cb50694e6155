"""Both sides of a copy, opened and checked once: what every driver of the pipeline starts from.

`open_sides(cfg)` opens the source (listing pool, unthrottled pacer) and the replica
(copy pool, adaptive limiter), both under one request-rate cap, and runs the preflight
(the replica's versioning; whether Object Lock settings are carried; the KMS preflight;
the source's replication), every request of it at once. The single-machine
run and every shard attempt of a multi-shard job use it, so both report the same
retry and throttling figures (`Sides.pacing()`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from backfill.config import RunConfig
from backfill.errors import UserError
from backfill.models import Shard
from backfill.pacing import AdaptiveLimiter, EndpointHealth, Pacer, RateLimiter
from backfill.pipeline.kms import kms_preflight
from backfill.pipeline.replication import Scope, detect
from backfill.pipeline.shards import AUTO_TARGET, discover
from backfill.s3 import LIST_POOL, Bucket, Sessions, open_bucket, reserve_open_files


@dataclass(frozen=True, slots=True)
class PaceStats:
    """How hard the run had to work for its requests: retries and throttling (the summary's figures)."""

    retries: int = 0
    writes_found_landed: int = 0  # writes whose answer was lost, found carried out (not sent again)
    concurrency_cuts: int = 0
    ceiling: int = 0
    lowest: int = 0  # the lowest copy concurrency of the run
    highest_after_lowest: int = 0  # and the highest it climbed back to after that

    def merged(self, other: PaceStats) -> PaceStats:
        """The figures of two independent pairs of sides (e.g. two Dask tasks), as one.

        Counts add up; the concurrency is that of the pair that was cut lowest.
        """
        if not self.ceiling:
            return other
        if not other.ceiling:
            return self
        low = min((self, other), key=lambda p: (p.lowest, -p.highest_after_lowest))
        return PaceStats(
            self.retries + other.retries,
            self.writes_found_landed + other.writes_found_landed,
            self.concurrency_cuts + other.concurrency_cuts,
            max(self.ceiling, other.ceiling),
            low.lowest,
            low.highest_after_lowest,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "retries": self.retries,
            "writes_found_landed": self.writes_found_landed,
            "concurrency_cuts": self.concurrency_cuts,
            "ceiling": self.ceiling,
            "lowest": self.lowest,
            "highest_after_lowest": self.highest_after_lowest,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PaceStats:
        return cls(**{k: int(d.get(k, 0)) for k in cls.__dataclass_fields__})


@dataclass(slots=True)
class Sides:
    """The source and the replica of a run, with everything that paces requests to them."""

    src: Bucket
    dst: Bucket
    limiter: AdaptiveLimiter  # copy concurrency (the replica's requests)
    list_pacer: Pacer
    copy_pacer: Pacer
    rate: RateLimiter  # --max-rps, shared by both pacers
    carry_lock: bool  # the source has Object Lock: copies carry its retention and legal holds
    rtt: float = 0.05  # seconds a bucket request took at preflight (the estimate's default latency)
    preflight_heads: int = 0  # HEADs the KMS preflight sent (the estimate counts them)
    health: EndpointHealth | None = None  # shared by both pacers: an unreachable endpoint pauses the run
    replication: Scope | None = None  # the source's live replication into the replica (pipeline/replication.py)
    shards: list[Shard] | None = None  # discovered beside the preflight (open_sides' discover_shards)

    def pacing(self) -> PaceStats:
        lim = self.limiter
        return PaceStats(
            retries=self.list_pacer.retries + self.copy_pacer.retries,
            writes_found_landed=self.copy_pacer.recovered,
            concurrency_cuts=lim.cuts,
            ceiling=lim.ceiling,
            lowest=lim.low,
            highest_after_lowest=lim.high_after_low,
        )


Outcome = tuple[Any, Exception | None]  # a check's result, or the error it raised


async def _outcome(fn: Callable[[], Awaitable[Any]], into: list[Outcome]) -> None:
    """Run one check to its end, keeping its error: the checks run at once, and are judged in a fixed order."""
    try:
        into.append((await fn(), None))
    except Exception as exc:
        into.append((None, exc))


def _result(outcome: list[Outcome]) -> Any:
    value, error = outcome[0]
    if error is not None:
        raise error
    return value


async def preflight(
    cfg: RunConfig, src: Bucket, dst: Bucket, sessions: Sessions, page_ready: anyio.Event | None = None
) -> tuple[bool, float, int]:
    """Refuse a replica without versioning: it cannot hold a history, nor be a replication target, and an
    overwrite there loses data. With --versions latest, --allow-unversioned copies the current versions anyway.
    Copies into `dst` also name the source's expected owner (--expected-source-owner).

    Every check is sent at once, with the first listing pages (shard discovery's, which the KMS preflight
    also reads): at 50 ms of round trip the preflight takes a few round trips, not one per check. Their
    answers are judged in the order the checks always had, so a refusal is the same line whatever answers
    first; nothing is written anywhere before they all passed.

    `page_ready` is set once the first listing page is in (or failed): an early discovery waits for it.
    Returns (whether Object Lock settings are carried, the versioning request's seconds, the KMS HEADs sent)."""
    dst.expect_source_owner(cfg.source.expected_owner)
    versioning: list[Outcome] = []
    src_lock: list[Outcome] = []
    dst_lock: list[Outcome] = []
    kms: list[Outcome] = []
    timed: list[float] = []

    async def dst_versioning() -> str:
        began = time.monotonic()
        status = await dst.versioning()
        timed.append(time.monotonic() - began)
        return status

    async def listing_and_kms() -> int:
        try:
            if cfg.inventory is not None:
                return 0  # the job is read from a report, not a listing
            page = await src.prefetch_versions(cfg.source.url.prefix)
        finally:
            if page_ready is not None:
                page_ready.set()
        return await kms_preflight(cfg, src, sessions, page)

    async def discard(fn: Callable[[], Awaitable[Any]]) -> None:
        with contextlib.suppress(Exception):  # a speculative read: discovery asks again and meets the error
            await fn()

    async with anyio.create_task_group() as tg:
        # A dry run too: it answers "what would a run do?", and a real one would stop here.
        tg.start_soon(_outcome, dst_versioning, versioning)
        tg.start_soon(_outcome, src.object_lock_enabled, src_lock)
        tg.start_soon(_outcome, dst.object_lock_enabled, dst_lock)  # needed only for a locked source: asked anyway
        tg.start_soon(_outcome, listing_and_kms, kms)
        tg.start_soon(discard, src.replication)  # kept by the bucket for detect()
        if cfg.inventory is None:
            tg.start_soon(discard, lambda: src.prefetch_delimited(cfg.source.url.prefix))
    status = str(_result(versioning))
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
    carry_lock = bool(_result(src_lock))
    if carry_lock and not _result(dst_lock):
        raise UserError(
            f"source bucket s3://{src.name} has Object Lock and replica s3://{dst.name} has not: S3 refuses a "
            "locked version's retention there (and replication needs Object Lock on the destination): create "
            "the replica with Object Lock (`backfill setup apply` does for a locked source)"
        )
    heads = int(_result(kms))
    return carry_lock, (timed[0] if timed else 0.05), heads


def _notify(line: str) -> None:
    sys.stderr.write(f"backfill: {line}\n")
    sys.stderr.flush()


async def _discover_early(cfg: RunConfig, src: Bucket, page_ready: anyio.Event, out: list[list[Shard]]) -> None:
    """Shard discovery beside the preflight: its first page is the preflight's (the bucket keeps it)."""
    with contextlib.suppress(Exception):  # read-only and speculative: the run discovers again and meets the error
        await page_ready.wait()
        out.append(await discover(src, cfg.source.url.prefix, cfg.shards or AUTO_TARGET))


@contextlib.asynccontextmanager
async def open_sides(cfg: RunConfig, *, discover_shards: bool = False) -> AsyncIterator[Sides]:
    """Both buckets, paced, and preflighted. Raises UserError for anything the user must fix.

    The two buckets are opened (HeadBucket) at once; a refusal of the source is reported before one
    of the replica, as when they were opened one after the other. `discover_shards`: a single-machine
    run also discovers its shards while the preflight waits for answers (Sides.shards), unless a
    manifest is there already (a resumed job keeps its shards), and cancels that when a check refuses."""
    rate = RateLimiter(cfg.max_rps)
    limiter = AdaptiveLimiter(cfg.concurrency, floor=min(4, cfg.concurrency))
    health = EndpointHealth(cfg.outage_timeout, notify=_notify)
    list_pacer = Pacer(None, rate, health=health)
    copy_pacer = Pacer(limiter, rate, health=health)
    sessions = Sessions()  # the two sides share one session when they share a profile
    reserve_open_files(cfg.concurrency + 8)
    async with contextlib.AsyncExitStack() as stack:
        opened: dict[str, list[Outcome]] = {"source": [], "replica": []}

        async def open_side(label: str, cm: contextlib.AbstractAsyncContextManager[Bucket]) -> None:
            await _outcome(lambda: stack.enter_async_context(cm), opened[label])

        async with anyio.create_task_group() as tg:
            tg.start_soon(open_side, "source", open_bucket(cfg.source, "source", list_pacer, LIST_POOL, None, sessions))
            tg.start_soon(
                open_side,
                "replica",
                open_bucket(cfg.dest, "replica", copy_pacer, cfg.concurrency + 8, None, sessions),
            )
        src: Bucket = _result(opened["source"])
        dst: Bucket = _result(opened["replica"])
        shards: list[list[Shard]] = []
        page_ready = anyio.Event()
        refused: Exception | None = None
        async with anyio.create_task_group() as tg:
            if discover_shards and cfg.inventory is None and not await anyio.Path(cfg.manifest).exists():
                tg.start_soon(_discover_early, cfg, src, page_ready, shards)
            try:
                carry_lock, rtt, heads = await preflight(cfg, src, dst, sessions, page_ready)
            except Exception as exc:
                refused = exc
                tg.cancel_scope.cancel()
        if refused is not None:
            raise refused
        scope = await detect(src, dst.name, cfg.source.url.prefix, cfg.dest.url.prefix)
        sides = Sides(src, dst, limiter, list_pacer, copy_pacer, rate, carry_lock, rtt, heads, health, scope)
        sides.shards = shards[0] if shards else None
        yield sides
