"""Running a job's shards: in this process (run-shards, copy --state) or on a Dask cluster.

Both call shard.run_shard, one attempt per shard; the Dask engine wraps it in a plain
synchronous function (anyio.run inside), which is what Dask tasks must be.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import anyio

from backfill.config import RunConfig
from backfill.distributed.store import StateAccess, Store, lease_name, open_store
from backfill.errors import UserError, first_error
from backfill.manifest import Manifest
from backfill.models import Shard
from backfill.progress import Counters, Display, human_bytes

from .plan import JobPlan, load_plan
from .shard import Lease, LeaseLost, ShardOutcome, ShardSettings, open_sides, run_shard

TOPIC = "backfill-progress"
_FIELDS = ("listed", "listed_bytes", "copied", "copied_bytes", "delete_markers", "recovered", "failed", "skipped")


def counts(c: Counters) -> dict[str, int]:
    return {f: int(getattr(c, f)) for f in _FIELDS}


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
        return {f: out.get(f, 0) for f in _FIELDS}

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
    this_run: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    shards_done: int = 0  # shards that ended this run (or were already complete)
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False

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
        t = self.this_run
        copied = t.get("copied", 0)
        return {
            "dry_run": False,
            "interrupted": self.interrupted,
            "elapsed_seconds": round(self.elapsed, 3),
            "shards": self.shards,
            "state": self.state,
            "engine": self.engine,
            "this_run": {
                **{f: t.get(f, 0) for f in _FIELDS},
                "recovered_after_crash": t.get("recovered", 0),
                "versions_per_second": round(copied / self.elapsed, 1) if self.elapsed > 0 else 0.0,
                "shards_run": self.shards_done,
            },
            "job": {
                k: self.totals.get(k, 0)
                for k in ("versions", "copied", "failed", "skipped", "pending", "shards", "shards_listed")
            },
            "problems": dict(sorted(self.reasons.items(), key=lambda kv: -kv[1])),
            "errors": self.errors,
            "exit_code": self.exit_code,
        }

    def lines(self) -> list[str]:
        s = self.summary()
        t, j = s["this_run"], s["job"]
        out = [
            f"this run ({self.engine}, {self.shards_done}/{self.shards} shards): {t['copied']:,} copied "
            f"({human_bytes(t['copied_bytes'])}) in {self.elapsed:.1f} s ({t['versions_per_second']:,.0f}/s), "
            f"{t['failed']:,} failed, {t['skipped']:,} skipped"
            + (f", {t['recovered_after_crash']} found already copied" if t["recovered_after_crash"] else ""),
            f"job: {j['copied']:,} of {j['versions']:,} versions copied, {j['failed']:,} failed, "
            f"{j['skipped']:,} skipped, {j['pending']:,} pending; shards listed {j['shards_listed']}/{self.shards}",
        ]
        for reason, n in list(s["problems"].items())[:10]:
            out.append(f"  {n:,} × {reason}")
        if j["failed"] or j["pending"] or self.shards_done < self.shards:
            out.append(f"run the same command again to continue; details: backfill status --state {self.state}")
        return out


def outcome_dict(o: ShardOutcome) -> dict[str, Any]:
    return {
        "shard": o.shard,
        "generation": o.generation,
        "already_complete": o.already_complete,
        "interrupted": o.interrupted,
        "totals": dict(o.totals),
        "reasons": dict(o.reasons),
        "counters": counts(o.counters),
    }


# --- in this process --------------------------------------------------------------


async def run_here(
    plan: JobPlan,
    cfg: RunConfig,
    state: str,
    access: StateAccess,
    settings: ShardSettings,
    shards: list[Shard],
    *,
    parallel: int,
    out: TextIO,
    engine: str = "local",
) -> JobResult:
    """Run these shards here, `parallel` at a time, sharing one pair of clients and one limiter."""
    import signal

    result = JobResult(state, engine, len(shards))
    progress = JobProgress(len(shards))
    shutdown = anyio.Event()
    started = time.monotonic()
    async with open_store(state, access) as store, open_sides(cfg) as sides:
        slots = anyio.CapacityLimiter(parallel)

        async def one(shard: Shard) -> None:
            async with slots:
                if shutdown.is_set():
                    result.interrupted = True
                    return
                c = Counters()
                progress.live[f"{shard.id}"] = c
                try:
                    o = await run_shard(
                        cfg,
                        plan.identity,
                        plan.created,
                        shard,
                        store,
                        sides,
                        settings,
                        out=out,
                        counters=c,
                        shutdown=shutdown,
                    )
                except LeaseLost as exc:
                    # Not an error of the job: the attempt that holds the lease finishes the shard.
                    print(f"{exc}; leaving the shard to that attempt", file=out, flush=True)
                    return
                result.add(o)
                progress.shards_done += 1

        async def watch_signals(scope: anyio.CancelScope) -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    if shutdown.is_set():
                        scope.cancel()
                        return
                    shutdown.set()
                    print(
                        f"\nstopping: letting in-flight copies finish (up to {cfg.grace_seconds:.0f} s); "
                        "Ctrl-C again to stop now",
                        file=out,
                        flush=True,
                    )

        async with anyio.create_task_group() as background:
            if threading.current_thread() is threading.main_thread():
                background.start_soon(watch_signals, background.cancel_scope)
            background.start_soon(Display(progress, "backfill", cfg.progress_interval, out).run)
            async with anyio.create_task_group() as work:
                for s in shards:
                    work.start_soon(one, s)
            background.cancel_scope.cancel()
    result.elapsed = time.monotonic() - started
    return result


# --- on Dask ----------------------------------------------------------------------


class _EventWriter:
    """A text stream whose lines go to the driver as Dask events (workers have no terminal)."""

    def __init__(self, shard: int) -> None:
        self.shard = shard
        self.buf = ""

    def write(self, s: str) -> int:
        self.buf += s
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            if line.strip():
                _log_event({"kind": "say", "text": line})
        return len(s)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _log_event(msg: dict[str, Any]) -> None:
    import distributed

    dd: Any = distributed
    with contextlib.suppress(ValueError):  # ValueError: not on a worker (called directly)
        dd.get_worker().log_event(TOPIC, msg)


def dask_shard_task(
    cfg: RunConfig,
    identity: dict[str, str],
    created: str,
    shard: Shard,
    state: str,
    access: StateAccess,
    settings: ShardSettings,
) -> dict[str, Any]:
    """A Dask task: one attempt at one shard. A plain function; the pipeline runs in its own event loop."""
    attempt = f"{shard.id}/{uuid.uuid4().hex[:8]}"
    out = _EventWriter(shard.id)

    async def main() -> dict[str, Any]:
        c = Counters()

        async def publish() -> None:
            while True:
                _log_event({"kind": "progress", "attempt": attempt, "counts": counts(c)})
                await anyio.sleep(0.5)

        async with open_store(state, access) as store, open_sides(cfg) as sides, anyio.create_task_group() as tg:
            tg.start_soon(publish)
            try:
                o = await run_shard(cfg, identity, created, shard, store, sides, settings, out=out, counters=c)
            finally:
                _log_event({"kind": "progress", "attempt": attempt, "counts": counts(c)})
                tg.cancel_scope.cancel()
        return outcome_dict(o)

    try:
        return anyio.run(main)
    except BaseException as exc:
        err = first_error(exc, UserError)
        if err is not None:
            return {"shard": shard.id, "error": str(err)}  # retrying will not help: tell the driver
        raise  # Dask retries the task (a lease lost to a live attempt: the retry waits for it)


def run_dask(
    plan: JobPlan,
    cfg: RunConfig,
    state: str,
    access: StateAccess,
    settings: ShardSettings,
    *,
    scheduler: str | None,
    workers: int,
    retries: int,
    out: TextIO,
) -> JobResult:
    """The driver: shards onto the cluster as tasks, one progress bar, one result."""
    try:
        import distributed
    except ImportError:
        raise UserError("--engine dask needs Dask: pip install 'backfill[dask]'") from None
    dd: Any = distributed  # untyped

    result = JobResult(state, "dask", len(plan.shards))
    progress = JobProgress(len(plan.shards))

    def on_event(event: tuple[float, dict[str, Any]]) -> None:
        _, msg = event
        if msg.get("kind") == "progress":
            progress.report(str(msg["attempt"]), {k: int(v) for k, v in msg["counts"].items()})
        elif msg.get("kind") == "say":
            print(msg["text"], file=out, flush=True)

    cluster: Any = None
    try:
        if scheduler:
            client = dd.Client(scheduler, timeout="30s")
        else:
            cluster = dd.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                silence_logs=logging.CRITICAL,
            )
            client = dd.Client(cluster)
    except OSError as exc:
        raise UserError(f"cannot reach the Dask scheduler {scheduler or '(local cluster)'}: {exc}") from None
    started = time.monotonic()  # elapsed: the job on the cluster, not the cluster's start
    progress.started = started
    try:
        client.subscribe_topic(TOPIC, on_event)
        run = uuid.uuid4().hex[:8]
        futures = [
            client.submit(
                dask_shard_task,
                cfg,
                plan.identity,
                plan.created,
                s,
                state,
                access,
                settings,
                key=f"backfill-shard-{s.id}-{run}",
                retries=retries,
                pure=False,
            )
            for s in plan.shards
        ]

        def collect() -> None:
            for fut in dd.as_completed(futures):
                try:
                    d = fut.result()
                except Exception as exc:  # the task failed after its retries (or its workers kept dying)
                    result.errors.append(f"a shard task failed after {retries} retries: {type(exc).__name__}: {exc}")
                    continue
                if "error" in d:
                    result.errors.append(str(d["error"]))
                    client.cancel(futures)  # a refusal (credentials, permissions) stops the job
                    return
                result.add(d)
                progress.shards_done += 1

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(Display(progress, "backfill", cfg.progress_interval, out).run)
                await anyio.to_thread.run_sync(collect)
                tg.cancel_scope.cancel()

        try:
            anyio.run(main)
        except KeyboardInterrupt:
            # Shards already running finish on their workers (a thread cannot be stopped);
            # none starts from now on. A local cluster's workers stop with this process:
            # their leases lapse and the next run takes those shards over.
            print("\nstopping: no more shards are started", file=out, flush=True)
            client.cancel(futures)
            result.interrupted = True
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    result.elapsed = time.monotonic() - started
    return result


# --- one view of all shard files --------------------------------------------------


async def merge(state: str, access: StateAccess, target: Path) -> JobPlan:
    """All shard checkpoints of a job, as one manifest file at `target` (status, verify)."""
    async with open_store(state, access) as store:
        plan = await load_plan(store)
        if plan is None:
            raise UserError(f"no backfill job at {state} (no job.json): pass the --state the copy used")
        await anyio.to_thread.run_sync(_create_merged, plan, target)
        with tempfile.TemporaryDirectory(prefix="backfill-merge-") as tmp:
            for s in plan.shards:
                await _merge_one(store, plan, s, target, Path(tmp) / f"{s.id}.db")
    return plan


def _create_merged(plan: JobPlan, target: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    m = Manifest.open(str(target), plan.identity, create=True)
    with m.transaction() as c:
        Manifest.set_job_value(c, "first_run_started", plan.created)
    m.close()


async def _merge_one(store: Store, plan: JobPlan, s: Shard, target: Path, tmp: Path) -> None:
    got = await store.get(lease_name(s.id))
    lease = Lease.load(got[0]) if got is not None else None
    have = bool(lease and lease.checkpoint and await store.download(lease.checkpoint, tmp))
    await anyio.to_thread.run_sync(_append, target, s, tmp if have else None)


def _append(target: Path, s: Shard, shard_file: Path | None) -> None:
    db = sqlite3.connect(target, isolation_level=None)
    if shard_file is not None:
        db.execute("ATTACH DATABASE ? AS s", (str(shard_file),))
    try:
        db.execute("BEGIN IMMEDIATE")
        if shard_file is None:
            row = (s.id, s.prefix, s.after, s.upto)
            db.execute("INSERT INTO shard (id, prefix, after, upto) VALUES (?, ?, ?, ?)", row)
        else:
            db.execute("INSERT INTO shard SELECT * FROM s.shard")
            db.execute("INSERT INTO version SELECT * FROM s.version")
        db.execute("COMMIT")
    finally:
        db.close()
