"""Running a job's shards on a Dask cluster: one task per shard, one progress bar, one result.

A task is a plain synchronous function (anyio.run inside), which is what Dask tasks must
be; it opens its own sides, so its outcome carries their retry and throttling figures.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import Any, TextIO

import anyio

from backfill.config import RunConfig
from backfill.distributed.store import StateAccess, open_store, watch_reachability
from backfill.errors import StopRun, UserError, first_error
from backfill.models import Shard
from backfill.pipeline.sides import open_sides
from backfill.pipeline.summary import counts
from backfill.progress import Counters, Display

from .job import JobProgress, JobResult, outcome_dict
from .lease import ShardSettings
from .plan import JobPlan
from .shard import run_shard

TOPIC = "backfill-progress"


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
            watch_reachability(store, sides, cfg.outage_timeout)
            try:
                o = await run_shard(cfg, identity, created, shard, store, sides, settings, out=out, counters=c)
                o.pacing = sides.pacing()  # these sides served this attempt alone
            finally:
                _log_event({"kind": "progress", "attempt": attempt, "counts": counts(c)})
                tg.cancel_scope.cancel()
        return outcome_dict(o)

    try:
        return anyio.run(main)
    except BaseException as exc:
        err = first_error(exc, StopRun) or first_error(exc, UserError)
        if err is not None:  # retrying will not help: tell the driver
            return {"shard": shard.id, "error": str(err), "resumable": isinstance(err, StopRun)}
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
    result.started_wall = time.time()
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
                    result.resumable = bool(d.get("resumable"))
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
