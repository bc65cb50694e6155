"""`backfill status`: a backfill's progress and its failed or skipped versions, read from the manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from backfill.cli.guard import guard
from backfill.cli.options import Endpoint, JsonOut
from backfill.cli.shards import merged_manifest, state_access
from backfill.errors import UserError
from backfill.manifest import Manifest
from backfill.models import State
from backfill.progress import human_bytes
from backfill.report import ReportWriter

REPORT_COLUMNS = ["key", "source_version_id", "state", "reason", "attempts", "last_error_at"]


def fail_report(report: str | None) -> None:
    if report is None:
        raise UserError("--failed and --skipped choose what --report FILE.csv|FILE.json writes: pass --report")
    raise UserError(f"--report {report}: name a .csv or a .json file")


def write_report(m: Manifest, path: str, states: list[State]) -> int:
    with ReportWriter(path, REPORT_COLUMNS) as w:
        for row in m.problem_rows(states):
            w.write(row)
        return w.rows


def status(
    manifest: Annotated[str | None, typer.Option(help="The manifest a copy printed at start.")] = None,
    json_out: JsonOut = False,
    limit: Annotated[int, typer.Option(help="How many failed/skipped versions to list.")] = 20,
    state: Annotated[
        str | None, typer.Option(help="A multi-shard job's state location: all its shard files, merged.")
    ] = None,
    merge_to: Annotated[
        str | None, typer.Option(help="With --state: keep the merged manifest in this file (for verify --manifest).")
    ] = None,
    profile: Annotated[str | None, typer.Option(help="AWS profile that reads an s3:// --state.")] = None,
    endpoint_url: Endpoint = None,
    failed: Annotated[bool, typer.Option("--failed", help="With --report: the failed versions.")] = False,
    skipped: Annotated[bool, typer.Option("--skipped", help="With --report: the skipped versions.")] = False,
    report: Annotated[
        str | None,
        typer.Option(
            help="Write the failed and/or skipped versions (both without --failed/--skipped) to FILE.csv or "
            "FILE.json: key, source version, state, reason, attempts, last error time."
        ),
    ] = None,
) -> None:
    """Show a backfill's progress and its failed or skipped versions, from the manifest."""

    def pick() -> str:
        if manifest:
            return manifest
        found = sorted(Path().glob("backfill-*.db"))
        if len(found) == 1:
            return str(found[0])
        if not found:
            raise UserError("no backfill-*.db here: pass --manifest PATH")
        raise UserError(f"several manifests here ({', '.join(map(str, found))}): pass --manifest PATH")

    path = merged_manifest(state, merge_to, state_access(profile, endpoint_url)) if state is not None else guard(pick)
    if report is not None and not report.endswith((".csv", ".json")):
        guard(lambda: fail_report(report))
    if (failed or skipped) and report is None:
        guard(lambda: fail_report(None))
    m = guard(lambda: Manifest.open(path, None, create=False))
    try:
        if report is not None:
            wanted = [
                st for st, on in ((State.FAILED, failed), (State.SKIPPED, skipped)) if on or not (failed or skipped)
            ]
            written = guard(lambda: write_report(m, report, wanted), path)
            typer.echo(
                f"{written:,} {' and '.join(s.name.lower() for s in wanted)} versions written to {report}", err=True
            )
        s, problems, reasons, archived = guard(
            lambda: (m.summary(), m.problems(limit), m.reasons(), m.archived()), path
        )
    finally:
        m.close()
    data: dict[str, Any] = {
        "manifest": path,
        "job": {k: v for k, v in s.job.items() if v},
        "shards": s.shards,
        "shards_listed": s.shards_listed,
        "versions": {k: {"count": t.versions, "bytes": t.bytes} for k, t in s.by_state.items()},
        "delete_markers": s.delete_markers,
        "current_fixes": s.current_fixes,
        "problems": reasons,
        "examples": problems,
        "archived": archived,  # skipped as archived, not restored: the next run after a restore copies them
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
        for name in ("copied", "pending", "failed", "skipped", "left_to_replication"):
            t = s.by_state.get(name)
            if t:
                lines.append(f"  {name:8} {t.versions:>12,}  {human_bytes(t.bytes)}")
        if archived:
            lines.append(f"  {archived:,} still archived: restore them (RestoreObject), then run the copy again")
        if s.current_fixes:
            lines.append(f"  {s.current_fixes:,} keys got a final copy of their current version (after older versions)")
        for reason, n in reasons.items():
            lines.append(f"  {n:,} × {reason}")
        for p in problems:
            lines.append(f"  {p['state']}: {p['key']} (version {p['version_id']}): {p['why']}")
        lines.append("complete" if data["complete"] else "not complete: run the copy command again to continue")
        typer.echo("\n".join(lines))
    raise typer.Exit(0 if data["complete"] else 1)
