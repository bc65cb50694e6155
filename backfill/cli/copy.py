"""`backfill copy SRC DST`: options → RunConfig → the engine (one machine, or shards) → exit code.

Exit codes: 0 all copied; 1 finished, some versions failed; 2 a user, configuration,
credential or permission error (one line, no traceback); 130 stopped by Ctrl-C.
"""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from backfill.cli.guard import before_anything, fail, guard, load_event_loop, resume_hint, run_async
from backfill.cli.options import (
    DEFAULT_SIDES,
    CheckpointSeconds,
    JsonOut,
    LeaseSeconds,
    MaxRps,
    OutageTimeout,
    ProgressInterval,
    SideOptions,
    default_manifest,
    options,
    shard_count,
    versions_mode,
)
from backfill.cli.output import copy_summary, print_copy, print_verify
from backfill.config import (
    COPY_CONCURRENCY,
    CopyOptions,
    Filters,
    RunConfig,
    check_glob,
    parse_size,
    parse_time,
)
from backfill.errors import UserError


def _age_seconds(text: str) -> float:
    from backfill.inventory import parse_age  # the inventory's module, for an --inventory run only

    return parse_age(text).total_seconds()


def log_choice(text: str) -> Literal["text", "json"]:
    if text not in ("text", "json"):
        raise UserError(f"--log-format {text!r}: text or json")
    return "json" if text == "json" else "text"


@options
def copy(
    source: Annotated[str, typer.Argument(help="s3://SRC-BUCKET[/PREFIX]")],
    dest: Annotated[str, typer.Argument(help="s3://DST-BUCKET[/PREFIX]")],
    manifest: Annotated[
        str | None, typer.Option(help="SQLite manifest [default: ./backfill-<src>-to-<dst>.db].")
    ] = None,
    sides: SideOptions = DEFAULT_SIDES,
    versions: Annotated[
        str, typer.Option(help="all: every version and delete marker; latest: current objects.")
    ] = "all",
    allow_unversioned: Annotated[
        bool,
        typer.Option(
            "--allow-unversioned",
            help="With --versions latest: copy into a replica without versioning (refused otherwise). "
            "--versions all always needs a versioned replica.",
        ),
    ] = False,
    concurrency: Annotated[
        int, typer.Option(help="Ceiling of copy requests in flight (adapts below it).")
    ] = COPY_CONCURRENCY,
    shards: Annotated[str, typer.Option(help="auto, or the number of key-range shards to list in parallel.")] = "auto",
    include: Annotated[list[str] | None, typer.Option(help="Copy only keys matching this glob (repeatable).")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Skip keys matching this glob (repeatable).")] = None,
    modified_before: Annotated[
        str | None, typer.Option(help="Copy only versions last modified before this ISO-8601 time.")
    ] = None,
    multipart_threshold: Annotated[
        str, typer.Option(help="Objects larger than this are copied in parts (UploadPartCopy).")
    ] = "5GiB",
    part_size: Annotated[str, typer.Option(help="Part size when the source has no part layout.")] = "512MiB",
    max_rps: MaxRps = None,
    acl: Annotated[
        str | None, typer.Option(help="Canned ACL for replica objects, e.g. bucket-owner-full-control.")
    ] = None,
    sse_kms_key_id: Annotated[str | None, typer.Option(help="Encrypt replica objects with this KMS key.")] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="List and count what would be copied, after a run's checks; write nothing."),
    ] = False,
    json_out: JsonOut = False,
    verify_after: Annotated[
        bool, typer.Option("--verify", help="Verify the replica against the manifest when the copy ends.")
    ] = False,
    settle_seconds: Annotated[
        float | None,
        typer.Option(
            help="After an abrupt stop, wait this long (from the last run's last write) for copies it left "
            "in flight before checking them [default: 10 s + 1 s per 20 MiB of the largest]."
        ),
    ] = None,
    progress_interval: ProgressInterval = 30.0,
    outage_timeout: OutageTimeout = 15 * 60.0,
    state: Annotated[
        str | None,
        typer.Option(
            help="Multi-shard mode: the job's state location, a DIR or s3://BUCKET/PREFIX/ (one file per shard) "
            "[default with --engine: ./backfill-<src>-to-<dst>.state]."
        ),
    ] = None,
    engine: Annotated[
        str | None, typer.Option(help="local: the shards in this process; dask: on a Dask cluster (needs --state).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address, tcp://HOST:8786 [default: a local cluster].")
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Worker processes of the local Dask cluster; also sizes the plan (12 shards each).")
    ] = 2,
    parallel: Annotated[int, typer.Option(help="--engine local: shards run at once.")] = 4,
    plan_only: Annotated[
        bool, typer.Option("--plan-only", help="Write the job's plan (shards) to --state and stop (for run-shards).")
    ] = False,
    lease_seconds: LeaseSeconds = 60.0,
    checkpoint_seconds: CheckpointSeconds = 60.0,
    inventory: Annotated[
        str | None,
        typer.Option(
            help="Read the job from this S3 Inventory report (s3://INV-BUCKET/PATH/manifest.json, or a local copy) "
            "instead of listing: a CSV report of all versions; its data files become the shards."
        ),
    ] = None,
    inventory_max_age: Annotated[
        str, typer.Option(help="Refuse an inventory report older than this (7d, 36h, …).")
    ] = "7d",
    prices: Annotated[
        str | None,
        typer.Option(help="A price table for the estimate, in the format of backfill/prices.json (laid over it)."),
    ] = None,
    latency: Annotated[
        float | None, typer.Option(help="Seconds per request for the time estimate [default: measured at start].")
    ] = None,
    prefixes: Annotated[
        int | None,
        typer.Option(help="Partitioned prefixes for the time estimate (3,500 writes/s each).", min=1),
    ] = None,
    log_format: Annotated[
        str, typer.Option(help="text, or json: the periodic progress line and the summary as one JSON object a line.")
    ] = "text",
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No progress bar or log line (cron): errors and the summary only."),
    ] = False,
) -> None:
    """Copy every version of SRC into DST, server-side; run it again to resume."""

    def build() -> RunConfig:
        if acl is not None and acl not in ("bucket-owner-full-control", "private"):
            raise UserError("--acl takes bucket-owner-full-control or private")
        src_side, dst_side = sides.build(source, dest)
        return RunConfig(
            source=src_side,
            dest=dst_side,
            manifest=manifest or default_manifest(source, dest),
            options=CopyOptions(
                versions=versions_mode(versions),
                multipart_threshold=parse_size(multipart_threshold),
                part_size=parse_size(part_size),
                acl=acl,
                sse_kms_key_id=sse_kms_key_id,
            ),
            filters=Filters(
                tuple(check_glob("--include", g) for g in include or ()),
                tuple(check_glob("--exclude", g) for g in exclude or ()),
                parse_time(modified_before) if modified_before else None,
            ),
            concurrency=concurrency,
            shards=shard_count(shards),
            max_rps=max_rps,
            dry_run=dry_run,
            progress_interval=progress_interval,
            settle_seconds=settle_seconds,
            allow_unversioned=allow_unversioned,
            prices=prices,
            latency=latency,
            prefixes=prefixes,
            inventory=inventory,
            inventory_max_age=_age_seconds(inventory_max_age) if inventory else None,
            log_format=log_choice(log_format),
            quiet=quiet,
            outage_timeout=outage_timeout,
        ).validate()

    multi_shard = state is not None or engine is not None or plan_only
    with before_anything():
        cfg = guard(build)
        if inventory is not None and multi_shard:
            raise fail("--inventory runs on one machine with --manifest: leave out --state, --engine and --plan-only")
        # The engine and the multi-shard machinery are imported here, for the mode that runs: a plain copy
        # never loads backfill.distributed, and `--help` neither.
        from backfill.cli.verify import verify_manifest
        from backfill.pipeline.runner import run_copy

        load_event_loop()

        if multi_shard:
            from backfill.cli import shards as multi
    if multi_shard:
        sh = guard(
            lambda: multi.sharding(
                cfg,
                manifest=manifest,
                state=state,
                engine=engine,
                scheduler=scheduler,
                workers=workers,
                parallel=parallel,
                plan_only=plan_only,
                lease_seconds=lease_seconds,
                checkpoint_seconds=checkpoint_seconds,
                dest_profile=sides.dest_profile,
                dest_endpoint=sides.dest_endpoint,
            )
        )
        job = multi.sharded_copy(cfg, sh, json_out=json_out)
        if job is None:  # --plan-only
            raise typer.Exit(0)
        code = job.exit_code
        if verify_after and code in (0, 1) and not job.errors:
            typer.echo("verifying the replica against the merged manifest…", err=True)
            checked = verify_manifest(cfg, multi.merged_manifest(sh.state, None, sh.access))
            print_verify(checked, json_out=False, err=json_out)
            code = max(code, checked["exit_code"])
        if job.interrupted and not job.errors:
            typer.echo(resume_hint(), err=True)
        raise typer.Exit(code)
    if not dry_run and not quiet:
        typer.echo(f"manifest: {cfg.manifest}", err=True)
    try:
        result = guard(lambda: run_async(run_copy, cfg), None if dry_run else cfg.manifest, resumable=not dry_run)
    except KeyboardInterrupt:  # before the run watches for signals itself: nothing was copied yet
        typer.echo(f"\n{resume_hint()}", err=True)
        raise typer.Exit(130) from None
    summary = copy_summary(result)
    code = result.exit_code
    verified = None
    if verify_after and not dry_run and not result.interrupted:
        typer.echo("verifying the replica against the manifest…", err=True)
        verified = verify_manifest(cfg, cfg.manifest)
        summary["verify"] = verified
        code = max(code, verified["exit_code"])
    print_copy(summary, json_out, log_json=cfg.log_format == "json")
    if verified is not None:
        print_verify(verified, json_out=False, err=json_out)
    if result.interrupted:
        typer.echo(resume_hint(), err=True)
    raise typer.Exit(code)
