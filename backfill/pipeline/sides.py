"""Both sides of a copy, opened and checked once: what every driver of the pipeline starts from.

`open_sides(cfg)` opens the source (listing pool, unthrottled pacer) and the replica
(copy pool, adaptive limiter), both under one request-rate cap, and runs the preflight
(the replica's versioning; whether Object Lock settings are carried). The single-machine
run and every shard attempt of a multi-shard job use it, so both report the same
retry and throttling figures (`Sides.pacing()`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from backfill.config import RunConfig
from backfill.errors import UserError
from backfill.pacing import AdaptiveLimiter, EndpointHealth, Pacer, RateLimiter
from backfill.pipeline.kms import kms_preflight
from backfill.pipeline.replication import Scope, detect
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


async def preflight(cfg: RunConfig, src: Bucket, dst: Bucket) -> bool:
    """Refuse a replica without versioning: it cannot hold a history, nor be a replication target, and an
    overwrite there loses data. With --versions latest, --allow-unversioned copies the current versions anyway.
    Copies into `dst` also name the source's expected owner (--expected-source-owner).

    Returns whether Object Lock settings are carried (the source has Object Lock)."""
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
    carry_lock = await src.object_lock_enabled()
    if carry_lock and not await dst.object_lock_enabled():
        raise UserError(
            f"source bucket s3://{src.name} has Object Lock and replica s3://{dst.name} has not: S3 refuses a "
            "locked version's retention there (and replication needs Object Lock on the destination): create "
            "the replica with Object Lock (`backfill setup apply` does for a locked source)"
        )
    return carry_lock


def _notify(line: str) -> None:
    sys.stderr.write(f"backfill: {line}\n")
    sys.stderr.flush()


@contextlib.asynccontextmanager
async def open_sides(cfg: RunConfig) -> AsyncIterator[Sides]:
    """Both buckets, paced, and preflighted. Raises UserError for anything the user must fix."""
    rate = RateLimiter(cfg.max_rps)
    limiter = AdaptiveLimiter(cfg.concurrency, floor=min(4, cfg.concurrency))
    health = EndpointHealth(cfg.outage_timeout, notify=_notify)
    list_pacer = Pacer(None, rate, health=health)
    copy_pacer = Pacer(limiter, rate, health=health)
    sessions = Sessions()  # the two sides share one session when they share a profile
    reserve_open_files(cfg.concurrency + 8)
    async with (
        open_bucket(cfg.source, "source", list_pacer, pool=LIST_POOL, sessions=sessions) as src,
        open_bucket(cfg.dest, "replica", copy_pacer, pool=cfg.concurrency + 8, sessions=sessions) as dst,
    ):
        began = time.monotonic()
        carry_lock = await preflight(cfg, src, dst)
        rtt = (time.monotonic() - began) / 2  # two requests: the replica's versioning, the source's Object Lock
        heads = await kms_preflight(cfg, src, sessions)
        scope = await detect(src, dst.name, cfg.source.url.prefix, cfg.dest.url.prefix)
        yield Sides(src, dst, limiter, list_pacer, copy_pacer, rate, carry_lock, rtt, heads, health, scope)
