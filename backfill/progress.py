"""Counters for a run, and how they are shown: tqdm on a terminal, a periodic log line otherwise."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

import anyio

from backfill.eta import Eta, eta


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass(slots=True)
class Counters:
    started: float = field(default_factory=time.monotonic)
    first_copy_at: float | None = None
    known_total: int | None = None  # versions this run will handle, when counted before (an inventory)
    shards: int = 0
    shards_listed: int = 0
    listed: int = 0  # versions queued for copying in this run (new or resumed)
    listed_bytes: int = 0
    copied: int = 0
    copied_bytes: int = 0
    delete_markers: int = 0
    recovered: int = 0  # found already in the replica after a crash, recorded without copying
    failed: int = 0
    skipped: int = 0
    expired_retentions: int = 0  # Object Lock retentions already expired at the copy: left out (S3 refuses them)
    listed_by_shard: dict[int, int] = field(default_factory=dict)  # for an ETA before listing ends
    finished_shards: set[int] = field(default_factory=set)
    pacing: Callable[[], dict[str, Any]] | None = None  # concurrency and throttling figures, for the JSON log
    status: Callable[[], str] | None = None  # a word from the run's pacing ("endpoint unreachable since …")
    left_to_replication: int = 0  # versions live replication owns (PENDING/COMPLETED), not copied
    current_fixes: int = 0  # keys given a final copy of their current version (replication got ahead)
    replication_heads: int = 0  # HEADs asked for replication statuses and current versions

    @property
    def done(self) -> int:
        return self.copied + self.failed + self.skipped

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def listing_done(self) -> bool:
        return bool(self.shards) and self.shards_listed >= self.shards

    def eta(self) -> Eta:
        """On the known total (an inventory), the listed one (listing done), else one estimated from the shards."""
        copying = self.elapsed() - self.first_copy_at if self.first_copy_at is not None else 0.0
        return eta(
            self.done,
            copying,
            known_total=self.known_total,
            listed=self.listed,
            listing_done=self.listing_done(),
            listed_by_shard=self.listed_by_shard,
            finished_shards=self.finished_shards,
            shards=self.shards,
        )

    def frame(self) -> tuple[int, int | None, str]:
        listing = "listed" if self.listing_done() else (f"listing {self.shards_listed}/{self.shards} shards")
        e = self.eta()
        total = e.total if e.total is not None else self.listed
        note = self.status() if self.status is not None else ""
        postfix = f"{human_bytes(self.copied_bytes)}, {self.failed} failed, {listing}, {e.text()}"
        return self.done, total, f"{note}; {postfix}" if note else postfix

    def record(self) -> dict[str, Any]:
        """The periodic line as one JSON object (--log-format json)."""
        el = self.elapsed()
        out: dict[str, Any] = {
            "event": "progress",
            "time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "elapsed_seconds": round(el, 1),
            "listed": self.listed,
            "listed_bytes": self.listed_bytes,
            "copied": self.copied,
            "copied_bytes": self.copied_bytes,
            "delete_markers": self.delete_markers,
            "recovered_after_crash": self.recovered,
            "failed": self.failed,
            "skipped": self.skipped,
            "versions_per_second": round(self.copied / el, 1) if el > 0 else 0.0,
            "shards": self.shards,
            "shards_listed": self.shards_listed,
            "eta": self.eta().to_json(),
        }
        if self.pacing is not None:
            out["pacing"] = self.pacing()
        return out

    def line(self) -> str:
        el = self.elapsed()
        rate = self.copied / el if el > 0 else 0.0
        listing = (
            "listing done"
            if self.shards and self.shards_listed >= self.shards
            else (f"listing {self.shards_listed}/{self.shards} shards")
        )
        note = self.status() if self.status is not None else ""
        return (
            f"{self.copied:,} copied ({human_bytes(self.copied_bytes)}) of {self.listed:,} listed, "
            f"{self.failed:,} failed, {self.skipped:,} skipped, {rate:,.0f} versions/s, {listing}, {self.eta().text()}"
            + (f"; {note}" if note else "")
        )


class Progress(Protocol):
    def line(self) -> str:
        """One log line, for a stream that is not a terminal."""
        ...

    def frame(self) -> tuple[int, int | None, str]:
        """(done, total or None, postfix) for the progress bar."""
        ...


class Display:
    """Shows progress until cancelled: tqdm on a terminal, a line every `interval` s otherwise.

    Writes to stderr only; stdout is kept for --json.
    """

    def __init__(
        self, progress: Progress, label: str, interval: float, stream: TextIO | None = None, fmt: str = "text"
    ) -> None:
        self.p = progress
        self.fmt = fmt  # "json": one JSON object per line, terminal or not
        self.label = label
        self.interval = interval
        self.stream = stream or sys.stderr

    async def run(self) -> None:
        record = getattr(self.p, "record", None)
        if self.fmt == "json" and record is not None:
            while True:
                await anyio.sleep(self.interval)
                print(json.dumps(record(), sort_keys=True), file=self.stream, flush=True)
        if not self.stream.isatty():
            while True:
                await anyio.sleep(self.interval)
                print(f"[{self.label}] {self.p.line()}", file=self.stream, flush=True)
        from tqdm import tqdm

        bar = tqdm(total=0, unit="ver", file=self.stream, dynamic_ncols=True, smoothing=0.1)

        def update() -> None:
            bar.n, bar.total, postfix = self.p.frame()
            bar.set_postfix_str(postfix, refresh=False)
            bar.refresh()

        try:
            while True:
                update()
                await anyio.sleep(0.5)
        finally:
            update()
            bar.close()
