"""Counters for a run, and how they are shown: tqdm on a terminal, a periodic log line otherwise."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

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
    last_failure: str = ""

    @property
    def done(self) -> int:
        return self.copied + self.failed + self.skipped

    def elapsed(self) -> float:
        return time.monotonic() - self.started

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


class Display:
    """Shows the counters until stopped. Never writes to stdout (kept for --json)."""

    def __init__(self, counters: Counters, interval: float, stream: TextIO | None = None) -> None:
        self.c = counters
        self.interval = interval
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    async def run(self) -> None:
        if self.tty:
            await self._bar()
        else:
            while True:
                await anyio.sleep(self.interval)
                print(f"[backfill] {self.c.line()}", file=self.stream, flush=True)

    async def _bar(self) -> None:
        from tqdm import tqdm

        bar = tqdm(total=0, unit="ver", file=self.stream, dynamic_ncols=True, smoothing=0.1)

        def update() -> None:
            listing_done = self.c.shards and self.c.shards_listed >= self.c.shards
            bar.total = self.c.listed
            bar.n = self.c.done
            bar.set_postfix_str(
                f"{human_bytes(self.c.copied_bytes)}, {self.c.failed} failed, "
                + ("listed" if listing_done else f"listing {self.c.shards_listed}/{self.c.shards} shards"),
                refresh=False,
            )
            bar.refresh()

        try:
            while True:
                update()
                await anyio.sleep(0.5)
        finally:
            update()
            bar.close()


class VerifyDisplay:
    """Progress of a verify: keys and versions compared, differences so far."""

    def __init__(self, counters: Any, interval: float, stream: TextIO | None = None) -> None:
        self.c = counters
        self.interval = interval
        self.stream = stream or sys.stderr

    def line(self) -> str:
        c = self.c
        return f"{c.keys:,} keys, {c.versions:,} versions compared, {c.identical:,} identical, {c.different:,} differ"

    async def run(self) -> None:
        if not self.stream.isatty():
            while True:
                await anyio.sleep(self.interval)
                print(f"[backfill verify] {self.line()}", file=self.stream, flush=True)
        from tqdm import tqdm

        bar = tqdm(unit="ver", file=self.stream, dynamic_ncols=True)
        try:
            while True:
                bar.n = self.c.versions
                bar.set_postfix_str(f"{self.c.different:,} differ", refresh=False)
                bar.refresh()
                await anyio.sleep(0.5)
        finally:
            bar.n = self.c.versions
            bar.close()
