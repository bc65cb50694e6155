"""How long the rest of a run takes.

The total is known when the job's size was counted before the copy (an inventory's plan, or a
dry run recorded in the manifest) or once every shard is listed. Before that it is estimated
from the shards listed so far: a shard still being listed is assumed to hold at least as many
versions as the average finished shard (shards are balanced only roughly, so this is said to be
an estimate wherever it is shown). The rate is the versions finished per second since the first
copy.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Eta:
    total: int | None  # versions this run will have handled at its end
    estimated: bool  # total is an estimate, not a count
    seconds: float | None  # None: no rate yet, or no total

    def text(self) -> str:
        if self.total is None:
            return "ETA unknown until a shard is listed"
        if self.seconds is None:
            return "ETA after the first copies"
        when = duration(self.seconds)
        return f"ETA ~{when} (total estimated from the shards listed)" if self.estimated else f"ETA {when}"

    def to_json(self) -> dict[str, object]:
        return {"total": self.total, "total_estimated": self.estimated, "seconds": self.seconds}


def duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 48 * 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s / 86400:.1f}d"


def estimated_total(listed_by_shard: Mapping[int, int], finished: Collection[int], shards: int) -> int | None:
    """Versions in all `shards`, from those listed: finished shards count as listed, the others as at
    least the mean of the finished ones. None before any shard has finished."""
    done = [listed_by_shard.get(s, 0) for s in finished]
    if not done:
        return None
    mean = sum(done) / len(done)
    rest = 0.0
    for s in range(shards):
        if s not in finished:
            rest += max(listed_by_shard.get(s, 0), mean)
    return round(sum(done) + rest)


def eta(
    done: int,
    copying_seconds: float,
    *,
    known_total: int | None = None,
    listed: int = 0,
    listing_done: bool = False,
    listed_by_shard: Mapping[int, int] | None = None,
    finished_shards: Collection[int] = (),
    shards: int = 0,
) -> Eta:
    """The ETA of a run that has finished `done` versions in `copying_seconds` since its first copy."""
    if known_total is not None:
        total: int | None = max(known_total, done)
        estimated = False
    elif listing_done:
        total, estimated = max(listed, done), False
    else:
        guess = estimated_total(listed_by_shard or {}, finished_shards, shards)
        total = None if guess is None else max(guess, listed, done)
        estimated = True
    if total is None or done <= 0 or copying_seconds <= 0:
        return Eta(total, estimated, None)
    rate = done / copying_seconds
    return Eta(total, estimated, (total - done) / rate)
