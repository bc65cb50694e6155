"""A multi-shard job's run, seen whole: live progress across attempts, and the merged result.

Both drivers (local.run_here, dask.run_dask) fill a JobResult with shard outcomes;
its summary is pipeline.summary's, the same structure as a single-machine run's.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from backfill.pipeline import summary
from backfill.pipeline.sides import PaceStats
from backfill.pipeline.summary import COUNTED, counts
from backfill.progress import Counters, human_bytes

from .shard import ShardOutcome


class JobProgress:
    """The whole job's progress: live counters of attempts in this process, or reported ones."""

    def __init__(self, shards: int) -> None:
        self.started = time.monotonic()
        self.shards = shards
        self.shards_done = 0
        self.live: dict[str, Counters] = {}
        self.reported: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def report(self, attempt: str, values: dict[str, int]) -> None:
        with self._lock:
            self.reported[attempt] = values

    def total(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        with self._lock:
            snaps = [counts(c) for c in self.live.values()] + list(self.reported.values())
        for s in snaps:
            out.update(s)
        return {f: out.get(f, 0) for f in COUNTED}

    def frame(self) -> tuple[int, int | None, str]:
        t = self.total()
        return (
            t["copied"] + t["failed"] + t["skipped"],
            t["listed"],
            f"{human_bytes(t['copied_bytes'])}, {t['failed']} failed, shards done {self.shards_done}/{self.shards}",
        )

    def line(self) -> str:
        t = self.total()
        el = time.monotonic() - self.started
        return (
            f"{t['copied']:,} copied ({human_bytes(t['copied_bytes'])}) of {t['listed']:,} listed, "
            f"{t['failed']:,} failed, {t['skipped']:,} skipped, {t['copied'] / el if el else 0:,.0f} versions/s, "
            f"shards done {self.shards_done}/{self.shards}"
        )


@dataclass(slots=True)
class JobResult:
    state: str
    engine: str
    shards: int
    elapsed: float = 0.0
    started_wall: float = field(default_factory=time.time)
    this_run: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    shards_done: int = 0  # shards that ended this run (or were already complete)
    errors: list[str] = field(default_factory=list)
    resumable: bool = False  # the errors are a stop (an outage past --outage-timeout, expired credentials)
    interrupted: bool = False
    pacing: PaceStats = field(default_factory=PaceStats)
    first_copy_wall: float | None = None  # the earliest first copy of the shards

    def add(self, o: ShardOutcome | dict[str, Any]) -> None:
        d = outcome_dict(o) if isinstance(o, ShardOutcome) else o
        self.shards_done += 1
        for k, v in d["counters"].items():
            self.this_run[k] = self.this_run.get(k, 0) + v
        for k, v in d["totals"].items():
            self.totals[k] = self.totals.get(k, 0) + v
        for k, v in d["reasons"].items():
            self.reasons[k] = self.reasons.get(k, 0) + v
        self.interrupted = self.interrupted or bool(d["interrupted"])
        if d.get("pacing"):
            self.pacing = self.pacing.merged(PaceStats.from_dict(d["pacing"]))
        first = d.get("first_copy_wall")
        if first is not None and (self.first_copy_wall is None or first < self.first_copy_wall):
            self.first_copy_wall = float(first)

    @property
    def exit_code(self) -> int:
        if self.errors:
            return 2
        if self.interrupted:
            return 130
        if self.totals.get("failed", 0) or self.totals.get("pending", 0):
            return 1
        return 0 if self.shards_done == self.shards else 1

    def summary(self) -> dict[str, Any]:
        """pipeline.summary's structure, plus what only a multi-shard job has."""
        first = None if self.first_copy_wall is None else max(0.0, self.first_copy_wall - self.started_wall)
        s = summary.build(
            dry_run=False,
            interrupted=self.interrupted,
            elapsed=self.elapsed,
            shards=self.shards,
            this_run=self.this_run,
            first_copy_seconds=first,
            pacing=self.pacing,
            manifest=None,  # the job's manifest is its shard files, in `state`
            totals=self.totals,
            reasons=self.reasons,
            exit_code=self.exit_code,
        )
        s["this_run"]["shards_run"] = self.shards_done
        s["state"], s["engine"], s["errors"] = self.state, self.engine, self.errors
        return s


def outcome_dict(o: ShardOutcome) -> dict[str, Any]:
    """A shard outcome as plain data (what a Dask task returns to the driver)."""
    return {
        "shard": o.shard,
        "generation": o.generation,
        "already_complete": o.already_complete,
        "interrupted": o.interrupted,
        "totals": dict(o.totals),
        "reasons": dict(o.reasons),
        "counters": counts(o.counters),
        "pacing": o.pacing.as_dict() if o.pacing is not None else None,
        "first_copy_wall": o.first_copy_wall,
    }
