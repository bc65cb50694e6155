"""Counters for a run, and how they are shown: tqdm on a terminal, a periodic log line otherwise."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Protocol, TextIO

import anyio


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
    left_to_replication: int = 0  # versions live replication owns (PENDING/COMPLETED), not copied
    current_fixes: int = 0  # keys given a final copy of their current version (replication got ahead)
    replication_heads: int = 0  # HEADs asked for replication statuses and current versions

    @property
    def done(self) -> int:
        return self.copied + self.failed + self.skipped

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def frame(self) -> tuple[int, int | None, str]:
        listing = (
            "listed"
            if self.shards and self.shards_listed >= self.shards
            else (f"listing {self.shards_listed}/{self.shards} shards")
        )
        return self.done, self.listed, f"{human_bytes(self.copied_bytes)}, {self.failed} failed, {listing}"

    def line(self) -> str:
        el = self.elapsed()
        rate = self.copied / el if el > 0 else 0.0
        listing = (
            "listing done"
            if self.shards and self.shards_listed >= self.shards
            else (f"listing {self.shards_listed}/{self.shards} shards")
        )
        return (
            f"{self.copied:,} copied ({human_bytes(self.copied_bytes)}) of {self.listed:,} listed, "
            f"{self.failed:,} failed, {self.skipped:,} skipped, {rate:,.0f} versions/s, {listing}"
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

    def __init__(self, progress: Progress, label: str, interval: float, stream: TextIO | None = None) -> None:
        self.p = progress
        self.label = label
        self.interval = interval
        self.stream = stream or sys.stderr

    async def run(self) -> None:
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
