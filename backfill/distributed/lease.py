"""The lease of a shard in the state location: claiming it, holding it, losing it.

Steps 1 (claim) and 2 (hold) of the protocol described in backfill.distributed.shard:
conditional writes on one small JSON object per shard, renewed every lease_seconds/4,
compared by ETag only (never by another machine's clock).

An outage of the state location (pacing.EndpointHealth pauses its requests) is a lapse like a
suspend: copies go on while the last renewal is fresh, then wait; the first renewal after the
outage (If-Match on our last ETag) re-validates the lease, or finds it taken over (LeaseLost: this
attempt stops copying the shard). Past --outage-timeout the renewal raises OutageTimeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import anyio

from backfill.distributed.store import Conflict, Store, lease_name
from backfill.errors import RetryableError
from backfill.models import KeyJob
from backfill.pipeline.resume import settle_time


def clock() -> float:
    """Seconds on a clock that keeps counting while the machine is suspended."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):
        return time.monotonic()


@dataclass(frozen=True, slots=True)
class ShardSettings:
    lease_seconds: float = 60.0  # a holder that could not renew for this long has stopped copying
    checkpoint_seconds: float = 60.0  # upload the shard's file this often
    settle_seconds: float | None = None  # None: 10 s + 1 s per 20 MiB of the largest listed version

    def settle(self, largest: int) -> float:
        """How long the copies of an attempt that stopped abruptly may take to land (pipeline.resume)."""
        return settle_time(largest, self.settle_seconds)


@dataclass(slots=True)
class Lease:
    shard: int
    generation: int
    owner: str
    state: str = "held"  # held | released
    listed_upto: str | None = None  # no attempt handed a key after this one to a copier
    largest: int = 0  # the largest version listed (how long its copy may take to land)
    checkpoint: str | None = None  # the shard file that counts
    clean: bool = True  # released with no copy in flight
    complete: bool = False  # released with everything copied
    heartbeat: float = 0.0  # wall clock of the last write, for people (the protocol does not compare clocks)
    totals: dict[str, int] = field(default_factory=dict)

    def dump(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def load(cls, body: bytes) -> Lease:
        d = json.loads(body)
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class LeaseLost(Exception):
    """Another attempt holds this shard now: this one stopped."""


def _owner() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class Holder:
    """The lease of a claimed shard: conditional writes, renewal, and whether copying may go on."""

    def __init__(self, store: Store, lease: Lease, etag: str, sent_at: float, settings: ShardSettings) -> None:
        self.store = store
        self.lease = lease
        self.etag = etag
        self.ttl = settings.lease_seconds
        self.valid_until = sent_at + self.ttl
        self.lost = False
        self.lost_event = anyio.Event()
        self._lock = anyio.Lock()

    async def may_copy(self) -> bool:
        """True while the lease is ours and fresh; while a renewal is late, wait for it; False once lost."""
        while not self.lost:
            if clock() < self.valid_until:
                return True
            await anyio.sleep(0.05)
        return False

    def _lose(self) -> None:
        self.lost = True
        self.lost_event.set()

    async def write(self, **changes: Any) -> None:
        """Rewrite the lease (If-Match on our last ETag). LeaseLost when someone else holds it now."""
        async with self._lock:
            if self.lost:
                raise LeaseLost(f"shard {self.lease.shard}: lease lost")
            new = replace(self.lease, heartbeat=time.time(), **changes)
            body = new.dump()
            while True:
                sent = clock()
                try:
                    # Shielded: a write cancelled after it went out may still land, and we would then
                    # hold a stale ETag and take our own write for a takeover at the next one. (The
                    # store itself recognises a write of ours whose answer was lost.)
                    with anyio.CancelScope(shield=True, deadline=anyio.current_time() + self.ttl) as scope:
                        self.etag = await self.store.put(lease_name(new.shard), body, if_match=self.etag)
                    if scope.cancelled_caught:
                        # No answer within a lease (the state location paused by an outage, pacing.
                        # EndpointHealth): not renewed, so valid_until stays and copies wait. The same
                        # bytes again: if the first landed after all, the store recognises them. First
                        # an unshielded checkpoint, so that a stop of the run (Ctrl-C twice) gets through.
                        await anyio.lowlevel.checkpoint()
                        continue
                except Conflict:
                    self._lose()
                    raise LeaseLost(
                        f"shard {new.shard}: another attempt took the lease over (generation > {new.generation})"
                    ) from None
                except RetryableError:
                    if clock() >= self.valid_until + 10 * self.ttl:
                        self._lose()
                        raise LeaseLost(f"shard {new.shard}: the state location did not take a lease write") from None
                    await anyio.sleep(min(1.0, self.ttl / 8))
                    continue
                self.lease = new
                self.valid_until = sent + self.ttl
                return

    async def keep_alive(self) -> None:
        """Renew every ttl/4 until cancelled; on losing the lease, return (lost_event is set)."""
        with contextlib.suppress(LeaseLost):
            while True:
                await anyio.sleep(self.ttl / 4)
                await self.write()

    async def listed(self, shard: int, jobs: list[KeyJob], marker: str | None, done: bool) -> None:
        """Before a page's keys reach the copiers: record that copies may now go up to its last key."""
        del shard, done
        largest = max((it.version.size for j in jobs for it in j.items), default=0)
        upto = self.lease.listed_upto
        if marker is not None and (upto is None or marker > upto):
            await self.write(listed_upto=marker, largest=max(self.lease.largest, largest))
        elif not await self.may_copy():
            raise LeaseLost(f"shard {self.lease.shard}: lease lost")


@dataclass(slots=True)
class Claim:
    holder: Holder | None  # None: the shard is complete, nothing to do
    previous: Lease | None
    settle: float = 0.0  # wait this long before checking the previous attempt's copies


async def claim(store: Store, shard: int, settings: ShardSettings, say: Callable[[str], None]) -> Claim:
    name = lease_name(shard)
    owner = _owner()
    while True:
        got = await store.get(name)
        if got is None:
            lease = Lease(shard, 1, owner, heartbeat=time.time())
            sent = clock()
            try:
                etag = await store.put(name, lease.dump(), create=True)
            except Conflict:
                continue  # another attempt created it first (the store recognises a write of our own)
            return Claim(Holder(store, lease, etag, sent, settings), None)
        body, etag = got
        prev = Lease.load(body)
        settle = 0.0
        if prev.state == "released":
            if prev.complete:
                return Claim(None, prev)
            if not prev.clean:
                settle = settings.settle(prev.largest)
        else:
            # Held: by a live attempt (it rewrites the lease every ttl/4) or a dead one.
            say(
                f"shard {shard}: held by {prev.owner} (generation {prev.generation}); "
                f"taking it over if it is not renewed within {settings.lease_seconds:.0f} s"
            )
            observed = clock()
            changed = False
            while (left := observed + settings.lease_seconds - clock()) > 0:
                await anyio.sleep(min(left, max(0.2, settings.lease_seconds / 8)))
                again = await store.get(name)
                if again is None or again[1] != etag:
                    changed = True
                    break
            if changed:
                continue  # renewed (alive: wait on) or released: look again
            settle = settings.settle(prev.largest)
        new = replace(
            prev,
            generation=prev.generation + 1,
            owner=owner,
            state="held",
            clean=True,
            complete=False,
            heartbeat=time.time(),
        )
        sent = clock()
        try:
            etag = await store.put(name, new.dump(), if_match=etag)
        except Conflict:
            continue  # another claimant won
        return Claim(Holder(store, new, etag, sent, settings), prev, settle)
