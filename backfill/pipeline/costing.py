"""The estimate of a run: a tally of what it queues (estimate.Tally), priced for its two sides.

A dry run prints it (with an existing manifest: what is left, from a scratch copy of the
manifest); a copy prints its one line once the job's size is known (at start from an
inventory, else when listing ends).
"""

from __future__ import annotations

from backfill.config import RunConfig
from backfill.estimate import Estimate, Layout, Tally, Timing, estimate, load_prices
from backfill.models import KeyJob, State
from backfill.pipeline.sides import Sides


def new_tally(cfg: RunConfig, sides: Sides) -> Tally:
    o = cfg.options
    layout = Layout(o.multipart_threshold, o.part_size, sides.carry_lock)
    return Tally(layout, dest_kms=o.sse_kms_key_id is not None)


def count(tally: Tally, jobs: list[KeyJob]) -> None:
    for j in jobs:
        for it in j.items:
            if it.state is not State.COPIED:
                tally.add(it.version)


def priced(cfg: RunConfig, sides: Sides, tally: Tally, *, shards: int, remaining: bool) -> Estimate:
    """`tally` priced: LIST pages are those the source was asked for (with an inventory: none), plus the
    preflight's HEADs."""
    tally.list_requests = sides.src.list_calls
    tally.preflight_heads = sides.preflight_heads
    timing = Timing(
        concurrency=cfg.concurrency,
        max_rps=cfg.max_rps,
        prefixes=cfg.prefixes or 1,
        latency=cfg.latency if cfg.latency is not None else max(sides.rtt, 0.001),
        shards=shards,
    )
    region = sides.src.region or "us-east-1"
    dest_region = sides.dst.region or "us-east-1"
    return estimate(tally, load_prices(cfg.prices), region, dest_region, timing, remaining=remaining)
