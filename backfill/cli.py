"""The command line: options → RunConfig → run → exit code. No S3 and no SQL here.

Exit codes: 0 all copied; 1 finished, some versions failed; 2 a user, configuration,
credential or permission error (one line, no traceback); 130 stopped by Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import anyio
import typer

from backfill.config import (
    COPY_CONCURRENCY,
    CopyOptions,
    Filters,
    RunConfig,
    Side,
    VerifyConfig,
    check_account,
    check_endpoint,
    check_glob,
    parse_s3_url,
    parse_size,
    parse_time,
)
from backfill.errors import UserError, first_error
from backfill.manifest import manifest_error
from backfill.pipeline.runner import run_copy
from backfill.pipeline.verifier import CATEGORIES, run_verify
from backfill.progress import human_bytes
from backfill.setup.cli import setup_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show s3://BUCKET[/PREFIX], not rich markup
    help="Backfill an S3 bucket, with every version, into a replica bucket: sharded, server-side, resumable.",
)
app.add_typer(setup_app, name="setup")
T = TypeVar("T")
A = TypeVar("A")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"backfill: error: {message}", err=True)
    return typer.Exit(2)


def _guard(fn: Callable[[], T], manifest: str | None = None) -> T:
    """Run `fn`; a UserError (or a failure of the `manifest` file) becomes one line and exit 2."""
    try:
        return fn()
    except BaseException as exc:
        err = first_error(exc, UserError)
        if err is None and manifest is not None:
            err = manifest_error(exc, manifest)
        if err is not None:
            raise _fail(str(err)) from None
        raise


def _run(fn: Callable[[A], Awaitable[T]], arg: A) -> T:
    return anyio.run(fn, arg)


def default_manifest(src: str, dst: str) -> str:
    def name(url: str) -> str:
        u = parse_s3_url(url)
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{u.bucket}_{u.prefix}".rstrip("_/"))

    return f"backfill-{name(src)}-to-{name(dst)}.db"


def _endpoint(side_value: str | None, shared: str | None) -> str | None:
    return check_endpoint(
        side_value or shared or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    )


def _versions_mode(value: str) -> Literal["all", "latest"]:
    if value == "all":
        return "all"
    if value == "latest":
        return "latest"
    raise UserError(f"--versions must be 'all' or 'latest', not {value!r}")


def _shard_count(value: str) -> int | None:
    if value == "auto":
        return None
    if not value.isdigit():
        raise UserError(f"--shards must be 'auto' or a number, not {value!r}")
    return int(value)


def _sides(
    source: str,
    dest: str,
    profiles: tuple[str | None, str | None],
    regions: tuple[str | None, str | None],
    endpoints: tuple[str | None, str | None, str | None],
    http: str = "lean",
    read_timeout: float = 60.0,
    owners: tuple[str | None, str | None] = (None, None),
) -> tuple[Side, Side]:
    """The two sides from the shared options; endpoints are (both, source, dest).

    `owners`: the accounts that must own the buckets (--expected-source-owner/--expected-dest-owner).
    """
    if http not in ("lean", "botocore"):
        raise UserError(f"--http must be 'lean' or 'botocore', not {http!r}")
    both, src_ep, dst_ep = endpoints
    if read_timeout <= 0:
        raise UserError("--read-timeout must be positive")
    lean = http == "lean"
    src_owner = check_account("--expected-source-owner", owners[0])
    dst_owner = check_account("--expected-dest-owner", owners[1])
    return (
        Side(parse_s3_url(source), profiles[0], regions[0], _endpoint(src_ep, both), lean, read_timeout, src_owner),
        Side(parse_s3_url(dest), profiles[1], regions[1], _endpoint(dst_ep, both), lean, read_timeout, dst_owner),
    )


LeaseSeconds = Annotated[
    float, typer.Option(help="A shard's lease lapses when not renewed this long (a dead worker's is taken over).")
]
CheckpointSeconds = Annotated[
    float, typer.Option(help="Upload each running shard's file to the state location this often.")
]
ExpectedSourceOwner = Annotated[
    str | None,
    typer.Option(
        "--expected-source-owner",
        help="The source bucket's account ID: every request says so (ExpectedBucketOwner, "
        "ExpectedSourceBucketOwner), and S3 refuses it if a mistyped name points at someone else's bucket.",
    ),
]
ExpectedDestOwner = Annotated[
    str | None,
    typer.Option("--expected-dest-owner", help="The replica bucket's account ID (ExpectedBucketOwner on each call)."),
]
SourceProfile = Annotated[str | None, typer.Option("--source-profile", help="AWS profile that lists the source.")]
DestProfile = Annotated[
    str | None, typer.Option("--dest-profile", help="AWS profile that writes the replica (and reads the source).")
]
SourceRegion = Annotated[str | None, typer.Option("--source-region", help="Source bucket's region (detected).")]
DestRegion = Annotated[str | None, typer.Option("--dest-region", help="Replica bucket's region (detected).")]
Endpoint = Annotated[
    str | None, typer.Option("--endpoint-url", help="S3 endpoint for both sides (AWS_ENDPOINT_URL is honoured).")
]
SourceEndpoint = Annotated[str | None, typer.Option("--source-endpoint-url", help="S3 endpoint of the source.")]
DestEndpoint = Annotated[str | None, typer.Option("--dest-endpoint-url", help="S3 endpoint of the replica.")]
ReadTimeout = Annotated[
    float,
    typer.Option(
        "--read-timeout",
        help="Seconds a request may wait without a byte from the server before it is retried "
        "(a copy's limit grows with its size).",
    ),
]
Http = Annotated[
    str,
    typer.Option(
        "--http",
        help="lean: CopyObject, ListObjectVersions and DeleteObject on backfill's own signed HTTP/1.1 client "
        "(a fraction of botocore's CPU); botocore: every request through aioboto3.",
    ),
]


@app.command()
def copy(
    source: Annotated[str, typer.Argument(help="s3://SRC-BUCKET[/PREFIX]")],
    dest: Annotated[str, typer.Argument(help="s3://DST-BUCKET[/PREFIX]")],
    manifest: Annotated[
        str | None, typer.Option(help="SQLite manifest [default: ./backfill-<src>-to-<dst>.db].")
    ] = None,
    source_profile: SourceProfile = None,
    dest_profile: DestProfile = None,
    source_region: SourceRegion = None,
    dest_region: DestRegion = None,
    endpoint_url: Endpoint = None,
    source_endpoint_url: SourceEndpoint = None,
    dest_endpoint_url: DestEndpoint = None,
    http: Http = "lean",
    read_timeout: ReadTimeout = 60.0,
    expected_source_owner: ExpectedSourceOwner = None,
    expected_dest_owner: ExpectedDestOwner = None,
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
    max_rps: Annotated[float | None, typer.Option(help="At most this many requests per second.")] = None,
    acl: Annotated[
        str | None, typer.Option(help="Canned ACL for replica objects, e.g. bucket-owner-full-control.")
    ] = None,
    sse_kms_key_id: Annotated[str | None, typer.Option(help="Encrypt replica objects with this KMS key.")] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="List and count what would be copied, after a run's checks; write nothing."),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")] = False,
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
    progress_interval: Annotated[
        float, typer.Option(help="Seconds between progress lines when not on a terminal.")
    ] = 30.0,
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
) -> None:
    """Copy every version of SRC into DST, server-side; run it again to resume."""

    def build() -> RunConfig:
        if acl is not None and acl not in ("bucket-owner-full-control", "private"):
            raise UserError("--acl takes bucket-owner-full-control or private")
        src_side, dst_side = _sides(
            source,
            dest,
            (source_profile, dest_profile),
            (source_region, dest_region),
            (endpoint_url, source_endpoint_url, dest_endpoint_url),
            http,
            read_timeout,
            (expected_source_owner, expected_dest_owner),
        )
        return RunConfig(
            source=src_side,
            dest=dst_side,
            manifest=manifest or default_manifest(source, dest),
            options=CopyOptions(
                versions=_versions_mode(versions),
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
            shards=_shard_count(shards),
            max_rps=max_rps,
            dry_run=dry_run,
            progress_interval=progress_interval,
            settle_seconds=settle_seconds,
            allow_unversioned=allow_unversioned,
        ).validate()

    cfg = _guard(build)
    if state is not None or engine is not None or plan_only:
        from backfill.distributed.commands import sharding

        sh = _guard(
            lambda: sharding(
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
                dest_profile=dest_profile,
                dest_endpoint=dest_endpoint_url or endpoint_url,
            )
        )
        from backfill.distributed.commands import sharded_copy

        raise typer.Exit(sharded_copy(cfg, sh, json_out=json_out, verify_after=verify_after))
    if not dry_run:
        typer.echo(f"manifest: {cfg.manifest}", err=True)
    try:
        result = _guard(lambda: _run(run_copy, cfg), None if dry_run else cfg.manifest)
    except KeyboardInterrupt:  # before the run watches for signals itself: nothing was copied yet
        typer.echo(f"\nstopped. To resume, run: {shlex.join(['backfill', *sys.argv[1:]])}", err=True)
        raise typer.Exit(130) from None
    summary = _copy_summary(result)
    code = result.exit_code
    if verify_after and not dry_run and not result.interrupted:
        vcfg = VerifyConfig(
            cfg.source,
            cfg.dest,
            manifest=cfg.manifest,
            versions=cfg.options.versions,
            concurrency=cfg.concurrency,
            max_rps=cfg.max_rps,
            progress_interval=progress_interval,
        )
        typer.echo("verifying the replica against the manifest…", err=True)
        verified = _guard(lambda: _run(run_verify, vcfg), cfg.manifest)
        summary["verify"] = _verify_summary(verified)
        code = max(code, verified.exit_code)
    _print_copy(result, summary, json_out)
    if "verify" in summary:
        _print_verify(summary["verify"], json_out=False, err=json_out)
    if result.interrupted:
        typer.echo(f"stopped. To resume, run: {shlex.join(['backfill', *sys.argv[1:]])}", err=True)
    raise typer.Exit(code)


def _copy_summary(r: Any) -> dict[str, Any]:
    from backfill.pipeline.summary import from_run

    return from_run(r)


def _print_copy(r: Any, s: dict[str, Any], json_out: bool) -> None:
    from backfill.pipeline.summary import lines

    if json_out:
        typer.echo(json.dumps(s, indent=2, sort_keys=True))
    typer.echo("\n".join(lines(s)), err=json_out)


@app.command()
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
    json_out: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")] = False,
    source_profile: SourceProfile = None,
    dest_profile: DestProfile = None,
    source_region: SourceRegion = None,
    dest_region: DestRegion = None,
    endpoint_url: Endpoint = None,
    source_endpoint_url: SourceEndpoint = None,
    dest_endpoint_url: DestEndpoint = None,
    http: Http = "lean",
    read_timeout: ReadTimeout = 60.0,
    expected_source_owner: ExpectedSourceOwner = None,
    expected_dest_owner: ExpectedDestOwner = None,
    concurrency: Annotated[int, typer.Option(help="Ceiling of HEAD/GET requests in flight.")] = 64,
    shards: Annotated[str, typer.Option(help="auto, or the number of key-range shards.")] = "auto",
    max_rps: Annotated[float | None, typer.Option(help="At most this many requests per second.")] = None,
    progress_interval: Annotated[
        float, typer.Option(help="Seconds between progress lines when not on a terminal.")
    ] = 30.0,
    state: Annotated[
        str | None, typer.Option(help="Check what a multi-shard job recorded (its shard files, merged).")
    ] = None,
) -> None:
    """Compare source and replica, every version: exit 0 identical, 1 differences (see --report)."""
    if state is not None:
        if manifest is not None:
            raise _fail("pass --manifest or --state, not both")
        from backfill.distributed.commands import merged_manifest, state_access

        manifest = merged_manifest(state, None, state_access(dest_profile, dest_endpoint_url or endpoint_url))

    def build() -> VerifyConfig:
        src_side, dst_side = _sides(
            source,
            dest,
            (source_profile, dest_profile),
            (source_region, dest_region),
            (endpoint_url, source_endpoint_url, dest_endpoint_url),
            http,
            read_timeout,
            (expected_source_owner, expected_dest_owner),
        )
        return VerifyConfig(
            src_side,
            dst_side,
            manifest=manifest,
            versions=_versions_mode(versions),
            report=report,
            deep=deep,
            concurrency=concurrency,
            shards=_shard_count(shards),
            max_rps=max_rps,
            progress_interval=progress_interval,
        ).validate()

    cfg = _guard(build)
    result = _guard(lambda: _run(run_verify, cfg), cfg.manifest)
    _print_verify(_verify_summary(result), json_out=json_out)
    raise typer.Exit(result.exit_code)


def _verify_summary(r: Any) -> dict[str, Any]:
    c = r.counters
    return {
        "mode": r.mode,
        "keys": c.keys,
        "versions": c.versions,
        "identical": c.identical,
        "identical_by": dict(c.by),
        "differences": {k: c.differences.get(k, 0) for k in CATEGORIES},
        "report": r.report,
        "exit_code": r.exit_code,
    }


def _print_verify(s: dict[str, Any], *, json_out: bool, err: bool = False) -> None:
    if json_out:
        typer.echo(json.dumps(s, indent=2, sort_keys=True))
        err = True
    how = ", ".join(f"{n:,} by {k}" for k, n in sorted(s["identical_by"].items()))
    lines = [
        f"verify ({s['mode']}): {s['keys']:,} keys, {s['versions']:,} source versions; "
        f"{s['identical']:,} identical" + (f" ({how})" if how else ""),
    ]
    total = sum(s["differences"].values())
    lines.append("no differences" if not total else f"{total:,} differences:")
    for k, n in s["differences"].items():
        if n:
            lines.append(f"  {k:20} {n:>10,}")
    if total and s["report"]:
        lines.append(f"listed in {s['report']}")
    elif total:
        lines.append("pass --report FILE.csv to list them")
    typer.echo("\n".join(lines), err=err)


@app.command()
def status(
    manifest: Annotated[str | None, typer.Option(help="The manifest a copy printed at start.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    limit: Annotated[int, typer.Option(help="How many failed/skipped versions to list.")] = 20,
    state: Annotated[
        str | None, typer.Option(help="A multi-shard job's state location: all its shard files, merged.")
    ] = None,
    merge_to: Annotated[
        str | None, typer.Option(help="With --state: keep the merged manifest in this file (for verify --manifest).")
    ] = None,
    profile: Annotated[str | None, typer.Option(help="AWS profile that reads an s3:// --state.")] = None,
    endpoint_url: Endpoint = None,
) -> None:
    """Show a backfill's progress and its failed or skipped versions, from the manifest."""
    from backfill.manifest import Manifest
    from backfill.models import State

    def pick() -> str:
        if manifest:
            return manifest
        found = sorted(Path().glob("backfill-*.db"))
        if len(found) == 1:
            return str(found[0])
        if not found:
            raise UserError("no backfill-*.db here: pass --manifest PATH")
        raise UserError(f"several manifests here ({', '.join(map(str, found))}): pass --manifest PATH")

    if state is not None:
        from backfill.distributed.commands import merged_manifest, state_access

        path = merged_manifest(state, merge_to, state_access(profile, endpoint_url))
    else:
        path = _guard(pick)
    m = _guard(lambda: Manifest.open(path, None, create=False))
    try:
        s, problems, reasons = _guard(lambda: (m.summary(), m.problems(limit), m.reasons()), path)
    finally:
        m.close()
    data: dict[str, Any] = {
        "manifest": path,
        "job": {k: v for k, v in s.job.items() if v},
        "shards": s.shards,
        "shards_listed": s.shards_listed,
        "versions": {k: {"count": t.versions, "bytes": t.bytes} for k, t in s.by_state.items()},
        "delete_markers": s.delete_markers,
        "problems": reasons,
        "examples": problems,
    }
    complete = s.shards > 0 and s.shards_listed == s.shards and s.count(State.PENDING) == 0
    data["complete"] = complete and s.count(State.FAILED) == 0
    if json_out:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        total = sum(t.versions for t in s.by_state.values())
        lines = [
            f"{s.job.get('source', '?')} → {s.job.get('dest', '?')} (versions: {s.job.get('versions', '?')})",
            f"shards listed: {s.shards_listed}/{s.shards}" + ("" if s.shards_listed < s.shards else " (listing done)"),
            f"versions: {total:,}, {s.delete_markers:,} of them delete markers",
        ]
        for name in ("copied", "pending", "failed", "skipped"):
            t = s.by_state.get(name)
            if t:
                lines.append(f"  {name:8} {t.versions:>12,}  {human_bytes(t.bytes)}")
        for reason, n in reasons.items():
            lines.append(f"  {n:,} × {reason}")
        for p in problems:
            lines.append(f"  {p['state']}: {p['key']} (version {p['version_id']}): {p['why']}")
        lines.append("complete" if data["complete"] else "not complete: run the copy command again to continue")
        typer.echo("\n".join(lines))
    raise typer.Exit(0 if data["complete"] else 1)


@app.command()
def demo(
    objects: Annotated[int, typer.Option(help="How many keys the demo bucket gets.")] = 2000,
) -> None:
    """Start a local SeaweedFS, fill a versioned demo bucket, back it up, and show the result."""
    from backfill.demo import run_demo

    raise typer.Exit(_guard(lambda: run_demo(objects)))


def main() -> None:
    app()


import backfill.distributed.commands  # noqa: E402, F401 - registers `backfill run-shards` on the app
