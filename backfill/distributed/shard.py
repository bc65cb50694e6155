"""One attempt at one shard, on any machine: lease, checkpoints, and the ordinary pipeline.

Engines (Dask, a Kubernetes Indexed Job, AWS Batch) run a shard at least once, maybe
twice at the same time, and a machine can die at any point. The shard's state lives
in the state location (backfill.state), and this protocol keeps a version from being
copied twice:

1. Claim. An attempt reads the shard's lease. Absent: create it (If-None-Match: *),
   generation 1. Released by an attempt that finished: claim it (If-Match), after
   `settle` if that attempt had copies in flight when it stopped; a released lease that
   says complete means there is nothing to do. Held: wait. A live holder rewrites the
   lease every lease_seconds/4, so an ETag that does not change for lease_seconds (on
   this machine's clock) means the holder is gone; only then claim (If-Match on that
   ETag: of several claimants one wins), and wait `settle` more for the copies the dead
   holder had in flight to land.
2. Hold. Before the copiers get a listed page, the holder records in the lease how far
   copies may go (`listed_upto`, the page's last key), with If-Match on its last ETag.
   It renews the lease every lease_seconds/4. It starts a copy only while its last
   successful lease write was sent less than lease_seconds ago (on a clock that counts
   suspend); past that, copies wait for a renewal to succeed. It stops at once when a
   lease write fails with a conflict: a claimant has taken over. (A renewal after a
   lapse is safe: it and a claimant's takeover are both If-Match on the same ETag, so
   only one of them succeeds.) So when a claimant takes over, the old holder has started no copy for
   lease_seconds and its last copies have had `settle` to land.
3. Checkpoint. The shard's SQLite file (the manifest's schema, this shard's rows) is
   written ahead and updated as in a single-machine run; every checkpoint_seconds, and
   at the end, a consistent copy of it is uploaded as shards/NNNNN.gGGGGGG.db (a name
   only this generation writes) and the lease is pointed at it (If-Match).
4. Resume. A new generation downloads the checkpoint the lease names. Its pending and
   failed versions are checked against the replica before copying (as after a local
   crash); keys after the checkpoint's marker and up to the lease's `listed_upto` are
   listed again and checked against the replica too (an earlier generation may have
   copied them after its last checkpoint); keys after `listed_upto` were never handed
   to a copier and are copied normally.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio

from backfill.config import RunConfig
from backfill.distributed.store import Conflict, Store, checkpoint_name, lease_name
from backfill.errors import RetryableError, UserError
from backfill.manifest import Manifest
from backfill.models import KeyJob, Shard
from backfill.pacing import AdaptiveLimiter, Pacer, RateLimiter
from backfill.pipeline.copier import SETTLE_RATE
from backfill.pipeline.runner import RunResult, ShardHooks, _pipeline, _preflight
from backfill.progress import Counters
from backfill.s3 import LIST_POOL, Bucket, Sessions, open_bucket, reserve_open_files

# Test hook, for the tests only: "SHARD:N" makes the first attempt (generation 1) of shard
# SHARD end its process with os._exit after N copies, as a machine that dies would.
TEST_DIE_AFTER = "BACKFILL_TEST_DIE_AFTER"


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
        return self.settle_seconds if self.settle_seconds is not None else 10 + largest / SETTLE_RATE


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


async def _landed(store: Store, name: str, body: bytes) -> str | None:
    """After a conditional write was refused: the ETag of `body` if it is what the store holds.

    An SDK sends a write again when the connection drops after the request went out;
    if the first one landed, the resend's condition fails (412) on our own write, not
    on another attempt's. A lease body names its owner and a heartbeat: no one else
    writes the same bytes.
    """
    got = await store.get(name)
    return got[1] if got is not None and got[0] == body else None


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
                    self.etag = await self.store.put(lease_name(new.shard), body, if_match=self.etag)
                except Conflict:
                    try:
                        landed = await _landed(self.store, lease_name(new.shard), body)
                    except RetryableError:
                        await anyio.sleep(min(1.0, self.ttl / 8))
                        continue  # the write again: refused again, then looked at again
                    if landed is None:
                        self._lose()
                        raise LeaseLost(
                            f"shard {new.shard}: another attempt took the lease over (generation > {new.generation})"
                        ) from None
                    self.etag = landed  # our own write, whose answer was lost
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
                landed = await _landed(store, name, lease.dump())
                if landed is None:
                    continue  # another attempt created it first
                etag = landed
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
            landed = await _landed(store, name, new.dump())
            if landed is None:
                continue  # another claimant won
            etag = landed
        return Claim(Holder(store, new, etag, sent, settings), prev, settle)


@dataclass(slots=True)
class ShardOutcome:
    shard: int
    totals: dict[str, int]
    reasons: dict[str, int]
    counters: Counters
    generation: int = 0
    already_complete: bool = False
    interrupted: bool = False


def _snapshot(src: Path, dst: Path) -> None:
    """A consistent single-file copy of a live WAL database."""
    with contextlib.suppress(FileNotFoundError):
        dst.unlink()
    fd = os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")
    finally:
        target.close()
        source.close()


@contextlib.asynccontextmanager
async def open_sides(cfg: RunConfig) -> AsyncIterator[tuple[Bucket, Bucket, bool]]:
    """Both buckets, paced as run_copy paces them, and whether Object Lock settings are carried."""
    rate = RateLimiter(cfg.max_rps)
    limiter = AdaptiveLimiter(cfg.concurrency, floor=min(4, cfg.concurrency))
    sessions = Sessions()  # the two sides share one session when they share a profile
    reserve_open_files(cfg.concurrency + 8)
    async with (
        open_bucket(cfg.source, "source", Pacer(None, rate), pool=LIST_POOL, sessions=sessions) as src,
        open_bucket(cfg.dest, "replica", Pacer(limiter, rate), pool=cfg.concurrency + 8, sessions=sessions) as dst,
    ):
        yield src, dst, await _preflight(cfg, src, dst)


def _die_after(shard: int, generation: int) -> int | None:
    spec = os.environ.get(TEST_DIE_AFTER, "")
    if not spec:
        return None
    which, _, n = spec.partition(":")
    return int(n) if int(which) == shard and generation == 1 else None


async def run_shard(
    cfg: RunConfig,
    identity: dict[str, str],
    created: str,
    shard: Shard,
    store: Store,
    sides: tuple[Bucket, Bucket, bool],
    settings: ShardSettings,
    *,
    out: Any,
    counters: Counters | None = None,
    shutdown: anyio.Event | None = None,
    signals: bool = False,
    display: bool = False,
) -> ShardOutcome:
    """One attempt at one shard. Raises LeaseLost if another attempt took over, UserError as usual."""
    counters = counters if counters is not None else Counters()

    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    got = await claim(store, shard.id, settings, say)
    if got.holder is None:
        assert got.previous is not None
        return ShardOutcome(shard.id, got.previous.totals, {}, counters, got.previous.generation, True)
    attempt = _Attempt(cfg, shard, store, settings, got, counters, say)
    try:
        with tempfile.TemporaryDirectory(prefix=f"backfill-shard-{shard.id}-") as tmp:
            outcome = await attempt.run(
                Path(tmp), identity, created, sides, out, shutdown=shutdown, signals=signals, display=display
            )
    except BaseException:
        await attempt.hand_on()
        raise
    await attempt.remove_older_checkpoints()
    return outcome


class _Attempt:
    """The claimed shard: its local file, its checkpoints, and the pipeline under the lease."""

    def __init__(
        self,
        cfg: RunConfig,
        shard: Shard,
        store: Store,
        settings: ShardSettings,
        got: Claim,
        counters: Counters,
        say: Callable[[str], None],
    ) -> None:
        assert got.holder is not None
        self.cfg, self.shard, self.store, self.settings = cfg, shard, store, settings
        self.holder, self.prev, self.settle = got.holder, got.previous, got.settle
        self.counters, self.say = counters, say
        self.generation = self.holder.lease.generation
        self.mine = checkpoint_name(shard.id, self.generation)
        self.stopping = anyio.Event()
        self.path = Path()
        self.snap = Path()

    async def _open(self, tmp: Path, identity: dict[str, str], created: str) -> Manifest:
        """The previous generation's checkpoint, or a new file holding only this shard."""
        self.path, self.snap = tmp / "shard.db", tmp / "upload.db"
        prev = self.prev
        if prev is not None and prev.checkpoint and not await self.store.download(prev.checkpoint, self.path):
            raise UserError(
                f"the lease of shard {self.shard.id} names the checkpoint {prev.checkpoint}, which is missing from "
                f"{self.store.url}: the state location was changed by hand; start the job again in a new --state"
            )
        fresh = not self.path.exists()
        manifest = Manifest.open(str(self.path), identity, create=True)
        if fresh:
            manifest.save_shards([self.shard])
            with manifest.transaction() as c:
                Manifest.set_job_value(c, "first_run_started", created)
        return manifest

    async def checkpoint(self, **changes: Any) -> None:
        """Upload a consistent copy of the shard file under this generation's name; point the lease at it."""
        await anyio.to_thread.run_sync(_snapshot, self.path, self.snap)
        await self.store.upload(self.mine, self.snap)
        await self.holder.write(checkpoint=self.mine, **changes)

    async def _periodic(self) -> None:
        with contextlib.suppress(LeaseLost):  # _relay stops the run
            while True:
                await anyio.sleep(self.settings.checkpoint_seconds)
                try:
                    await self.checkpoint()
                except RetryableError as exc:
                    self.say(f"shard {self.shard.id}: checkpoint upload failed, trying again later: {exc}")

    async def _relay(self, event: anyio.Event) -> None:
        """A lost lease (or the caller's shutdown) stops the pipeline; may_copy already lets no copy start."""
        await event.wait()
        self.stopping.set()

    async def _test_die(self, after: int) -> None:
        while self.counters.copied < after:  # noqa: ASYNC110 - a test hook polls the counters
            await anyio.sleep(0.005)
        os._exit(137)  # the test hook: a machine that dies mid-shard

    async def run(
        self,
        tmp: Path,
        identity: dict[str, str],
        created: str,
        sides: tuple[Bucket, Bucket, bool],
        out: Any,
        *,
        shutdown: anyio.Event | None,
        signals: bool,
        display: bool,
    ) -> ShardOutcome:
        holder, prev, shard = self.holder, self.prev, self.shard
        src, dst, carry_lock = sides
        manifest = await self._open(tmp, identity, created)
        try:
            hooks = ShardHooks(
                listed=holder.listed,
                recheck_upto={shard.id: prev.listed_upto} if prev is not None and prev.listed_upto else {},
                may_copy=holder.may_copy,
                shutdown=self.stopping,
                signals=signals,
                display=display,
            )
            # The lease protocol did the settle wait; the runner's own (from the file's heartbeat,
            # written on another machine's clock) is not needed.
            run_cfg = replace(self.cfg, manifest=str(self.path), settle_seconds=0.0)
            die_after = _die_after(shard.id, self.generation)
            result: RunResult | None = None
            error: Exception | None = None
            async with anyio.create_task_group() as tg:
                tg.start_soon(holder.keep_alive)
                tg.start_soon(self._relay, holder.lost_event)
                if shutdown is not None:
                    tg.start_soon(self._relay, shutdown)
                if self.settle > 0:
                    self.say(
                        f"shard {shard.id}: generation {self.generation} waits {self.settle:.0f} s for copies the "
                        "previous attempt left in flight to land before checking them against the replica"
                    )
                    with anyio.move_on_after(self.settle):
                        await self.stopping.wait()
                if not self.stopping.is_set():
                    tg.start_soon(self._periodic)
                    if die_after is not None:
                        tg.start_soon(self._test_die, die_after)
                    try:
                        result = await _pipeline(run_cfg, src, dst, manifest, self.counters, carry_lock, out, hooks)
                    except Exception as exc:
                        error = exc
                tg.cancel_scope.cancel()
            if holder.lost:
                raise LeaseLost(f"shard {shard.id}: another attempt took the lease over (or the lease lapsed)")
            totals = manifest.summary().totals()
            if error is not None:
                # Hand the shard on at once (no lease to wait out), with what this attempt did.
                with contextlib.suppress(Exception):
                    await self.checkpoint(state="released", clean=False, complete=False, totals=totals)
                raise error
            clean = manifest.job().get("clean") == "1"
            complete = totals["shards_listed"] == totals["shards"] and totals["pending"] == 0 and totals["failed"] == 0
            await self.checkpoint(state="released", clean=clean, complete=complete, totals=totals)
            reasons = manifest.reasons()
        finally:
            manifest.close()
        interrupted = result.interrupted if result is not None else True
        return ShardOutcome(shard.id, totals, reasons, self.counters, self.generation, False, interrupted)

    async def hand_on(self) -> None:
        """Cancelled or failed before releasing: release now, so that the next attempt waits only for
        copies that may still be in flight, not for the lease to lapse."""
        if self.holder.lost or self.holder.lease.state != "held":
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(10), contextlib.suppress(Exception):
            await self.holder.write(state="released", clean=False, complete=False)

    async def remove_older_checkpoints(self) -> None:
        """Earlier generations' files are superseded by ours (a late writer's leftovers too).

        Only older ones: a newer generation may already have claimed the released shard.
        """
        prefix = f"shards/{self.shard.id:05d}.g"
        with contextlib.suppress(Exception):  # tidying only
            for name in await self.store.names(prefix):
                gen = name[len(prefix) :].removesuffix(".db")
                if gen.isdigit() and int(gen) < self.generation:
                    await self.store.delete(name)
