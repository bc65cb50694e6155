"""What a command prints at its end: one summary, as text on stderr/stdout or as JSON (`--json`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import typer

from backfill.progress import human_bytes

if TYPE_CHECKING:  # the engine's modules are imported by the commands that run it, not by every start
    from backfill.distributed.job import JobResult
    from backfill.pipeline.run import RunResult


def copy_summary(r: RunResult) -> dict[str, Any]:
    """The summary of a single-machine copy (the same structure as a multi-shard job's)."""
    from backfill.pipeline import summary  # loaded already: the run that made `r` imported the engine

    return summary.from_run(r)


def print_copy(s: dict[str, Any], json_out: bool, *, log_json: bool = False) -> None:
    """A copy's summary: JSON on stdout with --json (the text then goes to stderr), else text on stdout.

    With --log-format json the text is replaced by one JSON object on one line of stderr
    ("event": "summary"), beside the progress objects."""
    shown = {k: v for k, v in s.items() if k != "estimate_lines"}  # the estimate is there as "estimate"
    if json_out:
        typer.echo(json.dumps(shown, indent=2, sort_keys=True))
    if log_json:
        typer.echo(json.dumps({"event": "summary", **shown}, sort_keys=True), err=True)
        return
    typer.echo("\n".join(copy_lines(s)), err=json_out)


def copy_lines(s: Mapping[str, Any]) -> list[str]:
    """The summary as text (stderr with --json, stdout otherwise), for both modes."""
    t = s["this_run"]
    if s["dry_run"]:
        return [
            f"dry run: would copy {t['listed']:,} versions ({human_bytes(t['listed_bytes'])}), "
            f"{t['delete_markers']:,} of them delete markers, from {s['shards']} shards; nothing was written",
            *s.get("estimate_lines", []),
        ]
    sharded = "state" in s
    j = s["job"]
    where = f" ({s['engine']}, {t['shards_run']}/{s['shards']} shards)" if sharded else ""
    out = [
        f"this run{where}: {t['copied']:,} copied ({human_bytes(t['copied_bytes'])}) in {s['elapsed_seconds']:.1f} s "
        f"({t['versions_per_second']:,.0f}/s), {t['failed']:,} failed, {t['skipped']:,} skipped"
        + (f", {t['recovered_after_crash']} found already copied" if t["recovered_after_crash"] else "")
    ]
    if t.get("expired_retentions"):
        out.append(
            f"{t['expired_retentions']:,} version(s) had an Object Lock retention that had already expired: copied "
            "without it (S3 refuses a retain-until date in the past); their legal holds were carried"
        )
    if t["retries"] or t["concurrency_cuts"]:
        cc = t["concurrency"]
        out.append(
            f"retried {t['retries']:,} requests"
            + (f" ({t['writes_found_landed']} writes found landed, not resent)" if t["writes_found_landed"] else "")
            + (
                f"; throttled: concurrency cut {t['concurrency_cuts']}× from {cc['ceiling']} "
                f"down to {cc['lowest']}, back up to {cc['highest_after_lowest']}"
                if t["concurrency_cuts"]
                else ""
            )
        )
    shards = s["shards"] if sharded else j["shards"]
    out.append(
        f"job: {j['copied']:,} of {j['versions']:,} versions copied, {j['failed']:,} failed, "
        f"{j['skipped']:,} skipped, {j['pending']:,} pending; shards listed {j['shards_listed']}/{shards}"
    )
    if j.get("left_to_replication") or t.get("replication_heads"):
        out.append(
            f"live replication: {j.get('left_to_replication', 0):,} versions left to it (written after its rule); "
            f"{t.get('replication_heads', 0):,} HEADs this run"
        )
    if j.get("current_fixes"):
        out.append(
            f"{j['current_fixes']:,} keys given a final copy of their current version (older versions had been "
            "copied on top of it: replication delivered it first, or they were copied by a later run)"
        )
    for reason, n in list(s["problems"].items())[:10]:
        out.append(f"  {n:,} × {reason}")
    if sharded:
        if j["failed"] or j["pending"] or t["shards_run"] < s["shards"]:
            out.append(f"run the same command again to continue; details: backfill status --state {s['state']}")
    elif j["failed"]:
        out.append(
            "run the same command again to retry the failed versions; "
            f"details: backfill status --manifest {s['manifest']}"
        )
    return out


def verify_summary(r: Any) -> dict[str, Any]:
    from backfill.pipeline.verifier import CATEGORIES  # loaded already: the verify that made `r` imported it

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


def print_verify(s: dict[str, Any], *, json_out: bool, err: bool = False) -> None:
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


def print_job(result: JobResult, json_out: bool) -> None:
    """The summary of a multi-shard job, as print_copy prints a single-machine one; then its first error."""
    print_copy(result.summary(), json_out)
    for e in result.errors[:1]:
        typer.echo(f"backfill: error: {e}", err=True)
