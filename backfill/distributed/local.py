"""Running a job's shards in this process (`run-shards`, `copy --state`): one pair of sides, one limiter."""

from __future__ import annotations

import threading
import time
from typing import TextIO

import anyio

from backfill.config import RunConfig
from backfill.distributed.store import StateAccess, open_store, watch_reachability
from backfill.errors import StopRun, first_error
from backfill.models import Shard
from backfill.pipeline.sides import open_sides
from backfill.pipeline.stopping import Stopper
from backfill.progress import Counters, Display

from .job import JobProgress, JobResult
from .lease import LeaseLost, ShardSettings
from .plan import JobPlan
from .shard import run_shard


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
    result = JobResult(state, engine, len(shards))
    progress = JobProgress(len(shards))
    started = time.monotonic()
    stopped_by: list[StopRun] = []
    async with open_store(state, access) as store, open_sides(cfg) as sides:
        watch_reachability(store, sides, cfg.outage_timeout)
        slots = anyio.CapacityLimiter(parallel)

        async with anyio.create_task_group() as background:
            # The first Ctrl-C: no shard starts, and each running shard's pipeline stops gracefully
            # (with its own grace period); a second: everything stops now.
            stopper = Stopper(cfg.grace_seconds, out, background.cancel_scope, deadline=False)
            shutdown = stopper.requested

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
                    except Exception as exc:
                        # An outage past --outage-timeout, expired credentials: every shard stops as
                        # after Ctrl-C (each hands its shard on), then the run ends with this one line.
                        stop = first_error(exc, StopRun)
                        if stop is None:
                            raise
                        stopped_by.append(stop)
                        stopper.stop(message=False)
                        return
                    result.add(o)
                    progress.shards_done += 1

            if threading.current_thread() is threading.main_thread():
                background.start_soon(stopper.watch_signals)
            background.start_soon(Display(progress, "backfill", cfg.progress_interval, out).run)
            async with anyio.create_task_group() as work:
                for s in shards:
                    work.start_soon(one, s)
            background.cancel_scope.cancel()
        result.pacing = sides.pacing()  # the shards shared these sides: their figures, once
    if stopped_by:
        raise stopped_by[0]
    result.elapsed = time.monotonic() - started
    return result
