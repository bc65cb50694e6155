"""Outages on demand: the S3 server killed with SIGKILL for a while, then started again on the same
ports and data directory (backfill.seaweed.Server).

    with Outages(server, [Outage(when=listing_started(manifest), seconds=6)]) as o:
        run the CLI ...
    o.log   # when each outage began and ended (time.time()), and whether its trigger fired

What it stands for: an endpoint that stops answering as a whole — a crashed or restarted
server, a VPN link that drops, Wi-Fi lost — for 5–20 s: every connection is refused meanwhile,
and the requests in flight at the moment of the kill lose their connection (a copy the server
had begun may or may not have been carried out: the client cannot know).

Each Outage waits for its trigger (a function polled every 20 ms: "the listing has begun",
"N versions are recorded", "a multipart upload is open"), then kills the server, sleeps, and
starts it again. Outages run one after another, in order, on one thread.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from backfill.seaweed import Server

Trigger = Callable[[], bool]
POLL = 0.02


@dataclass(slots=True)
class Outage:
    when: Trigger
    seconds: float
    timeout: float = 120.0  # give up waiting for the trigger (the run may have ended first)


@dataclass(slots=True)
class Happened:
    fired: bool
    began: float = 0.0  # time.time() when the server was killed
    ended: float = 0.0  # time.time() when it answered again
    next_copy: float = float("nan")  # seconds from `ended` to the next version recorded copied (with a manifest)
    note: str = ""


@dataclass(slots=True)
class Outages:
    server: Server
    plan: Sequence[Outage]
    manifest: str | None = None  # measure each outage's cost: seconds from the server's return to the next copy
    log: list[Happened] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: BaseException | None = None

    def __enter__(self) -> Outages:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=180)
        if not self.server.running:
            self.server.start()
        if self.error is not None and e is None:
            raise self.error

    def wait(self, timeout: float = 300) -> None:
        """Until every planned outage has happened (or was given up)."""
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        try:
            for o in self.plan:
                deadline = time.monotonic() + o.timeout
                while not o.when():
                    if self._stop.is_set() or time.monotonic() > deadline:
                        self.log.append(Happened(False, note="trigger never fired"))
                        break
                    time.sleep(POLL)
                else:
                    began = time.time()
                    self.server.kill()
                    slept = 0.0
                    while slept < o.seconds:  # the outage is served in full even when the run has ended
                        time.sleep(min(0.1, o.seconds - slept))
                        slept += 0.1
                    before = _copied(self.manifest) if self.manifest else 0
                    self.server.start()
                    h = Happened(True, began, time.time())
                    self.log.append(h)
                    if self.manifest:
                        h.next_copy = _next_copy(self.manifest, before, h.ended, self._stop)
        except BaseException as exc:  # reported to the test by __exit__
            self.error = exc


def _count(manifest: str, sql: str) -> int:
    try:
        with sqlite3.connect(f"file:{manifest}?mode=ro", uri=True, timeout=0.2) as db:
            return int(db.execute(sql).fetchone()[0])
    except sqlite3.Error:
        return -1


def _copied(manifest: str) -> int:
    return _count(manifest, "SELECT count(*) FROM version WHERE state = 1")


def _next_copy(manifest: str, before: int, since: float, stop: threading.Event, timeout: float = 120) -> float:
    """Seconds from `since` until the manifest records more copies than `before` (polled every 20 ms;
    the manifest's writer commits in batches, and that delay is included)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        if _copied(manifest) > before:
            return time.time() - since
        time.sleep(POLL)
    return float("nan")


def listing_started(manifest: str) -> Trigger:
    """The manifest exists and has its shards, and nothing is copied yet: the listers are at work."""
    return lambda: _count(manifest, "SELECT count(*) FROM shard") > 0


def copied_at_least(manifest: str, n: int) -> Trigger:
    return lambda: _count(manifest, "SELECT count(*) FROM version WHERE state = 1") >= n


def upload_open(manifest: str) -> Trigger:
    """A multipart copy has an upload open in the replica (the manifest's upload journal)."""
    return lambda: _count(manifest, "SELECT count(*) FROM upload") > 0


def after(seconds: float) -> Trigger:
    start = time.monotonic()
    return lambda: time.monotonic() - start >= seconds


def random_plan(rng: random.Random, manifest: str, total: int, n: int, seconds: tuple[float, float]) -> list[Outage]:
    """`n` outages of random length, each at a random point of the copy (by versions recorded), in order."""
    points = sorted(rng.randrange(0, max(1, total * 9 // 10)) for _ in range(n))
    return [Outage(copied_at_least(manifest, p), rng.uniform(*seconds)) for p in points]


def wait_until(cond: Callable[[], bool], timeout: float = 120) -> None:
    """Poll `cond` every 20 ms until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(POLL)
