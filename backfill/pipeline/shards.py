"""Split the source's key space into shards before listing starts.

A shard is a key range (after, upto] under the job's prefix. Any strings work as
bounds, so whatever boundaries discovery picks, the shards partition the keys
exactly; boundaries only decide how balanced the shards are. They come from the
"directories" of the bucket (common prefixes of a Delimiter='/' listing, refined
breadth-first while a time budget lasts), or, for a flat namespace, from the
first characters keys commonly start with.
"""

from __future__ import annotations

import string

import anyio

from backfill.models import Shard
from backfill.s3 import Bucket

AUTO_TARGET = 64
_FLAT_SPLITS = string.digits + string.ascii_uppercase + string.ascii_lowercase


def shards_from_boundaries(prefix: str, boundaries: list[str]) -> list[Shard]:
    cuts = sorted(set(boundaries))
    lows: list[str | None] = [None, *cuts]
    highs: list[str | None] = [*cuts, None]
    return [Shard(i, prefix, lo, hi) for i, (lo, hi) in enumerate(zip(lows, highs, strict=True))]


def _evenly(items: list[str], shards: int) -> list[str]:
    """At most shards - 1 boundaries, spread evenly over `items`."""
    if len(items) < shards:
        return items
    step = len(items) / shards
    return [items[int(i * step)] for i in range(1, shards)]


async def discover(bucket: Bucket, prefix: str, target: int, budget: float = 0.5) -> list[Shard]:
    """At most `target` shards, found within about `budget` seconds."""
    if target <= 1:
        return [Shard(0, prefix, None, None)]
    if not (await bucket.list_versions(prefix, None, None)).truncated:
        return [Shard(0, prefix, None, None)]  # one page holds it all: one listing stream is plenty
    cps, _keys, truncated = await bucket.list_delimited(prefix)
    if not cps:
        if not truncated:
            return [Shard(0, prefix, None, None)]  # small enough for one listing stream
        splits = _evenly([prefix + c for c in _FLAT_SPLITS], target)
        return shards_from_boundaries(prefix, splits)
    found: set[str] = set(cps)
    frontier = sorted(cps)
    with anyio.move_on_after(budget):
        while frontier and len(found) < target:
            batch, frontier = frontier[:32], frontier[32:]
            deeper: list[str] = []

            async def expand(p: str, out: list[str] = deeper) -> None:
                # A small page: deeper levels only refine the balance, and parsing a
                # thousand keys per prefix would delay the first copy.
                sub, _k, _t = await bucket.list_delimited(p, max_keys=100)
                out.extend(sub)

            async with anyio.create_task_group() as tg:
                for p in batch:
                    tg.start_soon(expand, p)
            found.update(deeper)
            frontier.extend(sorted(deeper))
    return shards_from_boundaries(prefix, _evenly(sorted(found), target))
