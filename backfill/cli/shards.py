"""Multi-shard jobs on the command line: `copy --state/--engine`, `run-shards`, and the merged manifest
that `status --state` and `verify --state` read."""

from __future__ import annotations

import atexit
import functools
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
import typer

from backfill.cli.guard import fail, guard, resume_hint
from backfill.cli.options import (
    DEFAULT_SIDES,
    CheckpointSeconds,
    JsonOut,
    LeaseSeconds,
    MaxRps,
    OutageTimeout,
    ProgressInterval,
    SideOptions,
    endpoint,
    options,
)
from backfill.config import COPY_CONCURRENCY, RunConfig
from backfill.errors import UserError

# The multi-shard machinery (backfill.distributed, the engine) is imported by the functions that use it:
# a plain `backfill copy` never does, and every command's start-up would pay for it otherwise.
if TYPE_CHECKING:
    from backfill.distributed.job import JobResult
    from backfill.distributed.lease import ShardSettings
    from backfill.distributed.plan import JobPlan
    from backfill.distributed.store import StateAccess

ENGINES = ("local", "dask")


@dataclass(frozen=True, slots=True)
class Sharding:
    state: str
    engine: str  # local | dask
    access: StateAccess
    settings: ShardSettings
    scheduler: str | None = None
    workers: int = 2
    parallel: int = 4
    retries: int = 3
    plan_only: bool = False


def default_state(manifest_default: str) -> str:
    """backfill-<src>-to-<dst>.state, beside where the manifest would be."""
    return manifest_default.removesuffix(".db") + ".state"


def state_access(profile: str | None, where: str | None) -> StateAccess:
    """How to reach an s3:// state location: the replica's profile and endpoint."""
    from backfill.distributed.store import StateAccess

    return StateAccess(profile=profile, endpoint_url=endpoint(where, None))


def settings_from(lease_seconds: float, checkpoint_seconds: float, settle_seconds: float | None) -> ShardSettings:
    if lease_seconds < 1:
        raise UserError("--lease-seconds must be at least 1")
    if checkpoint_seconds <= 0:
        raise UserError("--checkpoint-seconds must be positive")
    from backfill.distributed.lease import ShardSettings

    return ShardSettings(lease_seconds, checkpoint_seconds, settle_seconds)


def sharding(
    cfg: RunConfig,
    *,
    manifest: str | None,
    state: str | None,
    engine: str | None,
    scheduler: str | None,
    workers: int,
    parallel: int,
    plan_only: bool,
    lease_seconds: float,
    checkpoint_seconds: float,
    dest_profile: str | None,
    dest_endpoint: str | None,
) -> Sharding:
    """copy's multi-shard options, checked."""
    if manifest is not None:
        raise UserError("--manifest is the single-file mode; --state/--engine keep one file per shard: pass one")
    if engine is not None and engine not in ENGINES:
        raise UserError(f"--engine must be 'local' or 'dask', not {engine!r}")
    if scheduler is not None and engine != "dask":
        raise UserError("--scheduler needs --engine dask")
    if cfg.dry_run:
        raise UserError("--dry-run lists and counts without a state: run it without --state/--engine")
    if workers < 1 or parallel < 1:
        raise UserError("--workers and --parallel must be at least 1")
    return Sharding(
        state=state or default_state(cfg.manifest),
        engine=engine or "local",
        access=state_access(dest_profile, dest_endpoint),
        settings=settings_from(lease_seconds, checkpoint_seconds, cfg.settle_seconds),
        scheduler=scheduler,
        workers=workers,
        parallel=parallel,
        plan_only=plan_only,
    )


def sharded_copy(cfg: RunConfig, sh: Sharding, *, json_out: bool) -> JobResult | None:
    """`backfill copy … --state/--engine`: plan (or adopt the plan), then run every shard and print the summary.

    None with --plan-only."""
    from backfill.cli.output import print_job
    from backfill.distributed.dask import run_dask
    from backfill.distributed.local import run_here
    from backfill.distributed.plan import SHARDS_PER_WORKER, make_plan
    from backfill.distributed.store import open_store
    from backfill.pipeline.shards import AUTO_TARGET
    from backfill.pipeline.sides import open_sides

    async def plan_it() -> tuple[JobPlan, bool]:
        async with open_store(sh.state, sh.access) as store, open_sides(cfg) as sides:
            if cfg.shards is not None:
                target = cfg.shards
            elif sh.engine == "dask":
                target = max(16, SHARDS_PER_WORKER * sh.workers)
            else:
                target = AUTO_TARGET
            return await make_plan(store, cfg, sides.src, target)

    plan, created = guard(lambda: anyio.run(plan_it))
    typer.echo(
        f"state: {sh.state} ({len(plan.shards)} shards, " + ("planned now)" if created else "planned earlier)"),
        err=True,
    )
    if sh.plan_only:
        typer.echo(
            f"planned. Run the shards with: backfill run-shards --state {shlex.quote(sh.state)} "
            "--index I --count N   (one process per index 0…N-1; see the README)",
            err=True,
        )
        return None
    if sh.engine == "dask":
        result = guard(
            lambda: run_dask(
                plan,
                cfg,
                sh.state,
                sh.access,
                sh.settings,
                scheduler=sh.scheduler,
                workers=sh.workers,
                retries=sh.retries,
                out=sys.stderr,
            )
        )
    else:
        shards = list(plan.shards)
        here = functools.partial(
            run_here, plan, cfg, sh.state, sh.access, sh.settings, shards, parallel=sh.parallel, out=sys.stderr
        )
        result = guard(lambda: anyio.run(here), resumable=True)
    print_job(result, json_out)
    if result.resumable:  # a Dask task stopped by an outage or expired credentials (local: guard says it)
        typer.echo(resume_hint(), err=True)
    return result


def merged_manifest(state: str, merge_to: str | None, access: StateAccess) -> str:
    """Every shard file of the job at `state`, merged into one manifest (a temporary file unless `merge_to`)."""
    if merge_to:
        target = Path(merge_to)
    else:
        tmp = tempfile.mkdtemp(prefix="backfill-merged-")
        atexit.register(shutil.rmtree, tmp, True)
        target = Path(tmp) / "merged.db"
    from backfill.distributed.merge import merge

    guard(lambda: anyio.run(merge, state, access, target))
    return str(target)


def _from_env(value: int | None, *names: str) -> int | None:
    if value is not None:
        return value
    for n in names:
        v = os.environ.get(n, "")
        if v.isdigit():
            return int(v)
    return None


@options
def run_shards(
    state: Annotated[str, typer.Option(help="The job's state location (DIR or s3://BUCKET/PREFIX/).")],
    index: Annotated[
        int | None,
        typer.Option(help="This process's index [default: $JOB_COMPLETION_INDEX or $AWS_BATCH_JOB_ARRAY_INDEX]."),
    ] = None,
    count: Annotated[
        int | None, typer.Option(help="How many processes share the shards [default: $AWS_BATCH_JOB_ARRAY_SIZE].")
    ] = None,
    sides: SideOptions = DEFAULT_SIDES,
    concurrency: Annotated[
        int, typer.Option(help="Ceiling of copy requests in flight in this process.")
    ] = COPY_CONCURRENCY,
    parallel: Annotated[int, typer.Option(help="Shards run at once in this process.")] = 4,
    max_rps: MaxRps = None,
    lease_seconds: LeaseSeconds = 60.0,
    checkpoint_seconds: CheckpointSeconds = 60.0,
    settle_seconds: Annotated[
        float | None,
        typer.Option(help="After taking over a dead worker's shard, wait this long for its in-flight copies."),
    ] = None,
    json_out: JsonOut = False,
    progress_interval: ProgressInterval = 30.0,
    outage_timeout: OutageTimeout = 15 * 60.0,
) -> None:
    """Run shards INDEX, INDEX+COUNT, … of a planned job (a Kubernetes Indexed Job or AWS Batch array member)."""
    i = _from_env(index, "JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX")
    n = _from_env(count, "AWS_BATCH_JOB_ARRAY_SIZE")
    if i is None:
        raise fail("pass --index (or run where JOB_COMPLETION_INDEX or AWS_BATCH_JOB_ARRAY_INDEX is set)")
    if n is None:
        raise fail("pass --count, the number of indexes (AWS_BATCH_JOB_ARRAY_SIZE is read when set)")
    if n < 1 or not 0 <= i < n:
        raise fail(f"--index must be in 0…{n - 1} for --count {n}, not {i}")
    if parallel < 1:
        raise fail("--parallel must be at least 1")
    from backfill.cli.output import print_job
    from backfill.distributed.local import run_here
    from backfill.distributed.plan import load_plan
    from backfill.distributed.store import open_store

    settings = guard(lambda: settings_from(lease_seconds, checkpoint_seconds, settle_seconds))
    access = state_access(sides.dest_profile, sides.dest_endpoint)

    async def read_plan() -> JobPlan | None:
        async with open_store(state, access) as store:
            return await load_plan(store)

    plan = guard(lambda: anyio.run(read_plan))
    if plan is None:
        raise fail(
            f"no job planned at {state}: plan it first with "
            f"`backfill copy SRC DST --state {state} --plan-only` (and the copy options it needs)"
        )

    def build() -> RunConfig:
        src, dst = sides.build(plan.source, plan.dest)
        return plan.run_config(
            src,
            dst,
            concurrency=concurrency,
            max_rps=max_rps,
            progress_interval=progress_interval,
            outage_timeout=outage_timeout,
        )

    cfg = guard(build)
    mine = list(plan.shards)[i::n]
    typer.echo(f"state: {state}; index {i} of {n}: {len(mine)} of {len(plan.shards)} shards", err=True)
    here = functools.partial(run_here, plan, cfg, state, access, settings, mine, parallel=parallel, out=sys.stderr)
    result = guard(lambda: anyio.run(here), resumable=True)
    print_job(result, json_out)
    if result.interrupted and not result.errors:
        typer.echo(resume_hint(), err=True)
    raise typer.Exit(result.exit_code)
