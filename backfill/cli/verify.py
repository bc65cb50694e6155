"""`backfill verify SRC DST`: compare source and replica, every version; exit 0 identical, 1 differences."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from backfill.cli import shards as multi
from backfill.cli.guard import fail, guard, run_async
from backfill.cli.options import (
    DEFAULT_SIDES,
    JsonOut,
    MaxRps,
    ProgressInterval,
    SideOptions,
    options,
    shard_count,
    versions_mode,
)
from backfill.cli.output import print_verify, verify_summary
from backfill.config import RunConfig, VerifyConfig


@options
def verify(
    source: Annotated[str, typer.Argument(help="s3://SRC-BUCKET[/PREFIX]")],
    dest: Annotated[str, typer.Argument(help="s3://DST-BUCKET[/PREFIX]")],
    manifest: Annotated[
        str | None, typer.Option(help="Check the versions a backfill recorded (source → replica version).")
    ] = None,
    versions: Annotated[str, typer.Option(help="all: whole histories; latest: current objects.")] = "all",
    report: Annotated[str | None, typer.Option(help="Write one row per difference to this .csv or .json.")] = None,
    deep: Annotated[
        bool, typer.Option("--deep", help="When metadata cannot decide, compare content (streamed GETs).")
    ] = False,
    json_out: JsonOut = False,
    sides: SideOptions = DEFAULT_SIDES,
    concurrency: Annotated[int, typer.Option(help="Ceiling of HEAD/GET requests in flight.")] = 64,
    shards: Annotated[str, typer.Option(help="auto, or the number of key-range shards.")] = "auto",
    max_rps: MaxRps = None,
    progress_interval: ProgressInterval = 30.0,
    state: Annotated[
        str | None, typer.Option(help="Check what a multi-shard job recorded (its shard files, merged).")
    ] = None,
) -> None:
    """Compare source and replica, every version: exit 0 identical, 1 differences (see --report)."""
    if state is not None:
        if manifest is not None:
            raise fail("pass --manifest or --state, not both")
        manifest = multi.merged_manifest(state, None, multi.state_access(sides.dest_profile, sides.dest_endpoint))

    def build() -> VerifyConfig:
        src_side, dst_side = sides.build(source, dest)
        return VerifyConfig(
            src_side,
            dst_side,
            manifest=manifest,
            versions=versions_mode(versions),
            report=report,
            deep=deep,
            concurrency=concurrency,
            shards=shard_count(shards),
            max_rps=max_rps,
            progress_interval=progress_interval,
        ).validate()

    cfg = guard(build)
    from backfill.pipeline.verifier import run_verify  # the engine: imported by the command that runs it

    result = guard(lambda: run_async(run_verify, cfg), cfg.manifest)
    print_verify(verify_summary(result), json_out=json_out)
    raise typer.Exit(result.exit_code)


def verify_manifest(cfg: RunConfig, manifest: str) -> dict[str, Any]:
    """`copy --verify`: the replica checked against the manifest the copy just wrote; its summary."""
    vcfg = VerifyConfig(
        cfg.source,
        cfg.dest,
        manifest=manifest,
        versions=cfg.options.versions,
        concurrency=cfg.concurrency,
        max_rps=cfg.max_rps,
        progress_interval=cfg.progress_interval,
    )
    from backfill.pipeline.verifier import run_verify  # see verify

    return verify_summary(guard(lambda: run_async(run_verify, vcfg), manifest))
