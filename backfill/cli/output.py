"""What a command prints at its end: one summary, as text on stderr/stdout or as JSON (`--json`)."""

from __future__ import annotations

import json
from typing import Any

import typer

from backfill.pipeline.verifier import CATEGORIES
from backfill.progress import human_bytes


def copy_summary(r: Any) -> dict[str, Any]:
    c = r.counters
    el = c.elapsed()
    out: dict[str, Any] = {
        "dry_run": r.dry_run,
        "interrupted": r.interrupted,
        "elapsed_seconds": round(el, 3),
        "shards": c.shards,
        "this_run": {
            "listed": c.listed,
            "listed_bytes": c.listed_bytes,
            "copied": c.copied,
            "copied_bytes": c.copied_bytes,
            "delete_markers": c.delete_markers,
            "recovered_after_crash": c.recovered,
            "failed": c.failed,
            "skipped": c.skipped,
            "versions_per_second": round(c.copied / el, 1) if el > 0 else 0.0,
            "first_copy_seconds": round(c.first_copy_at, 3) if c.first_copy_at is not None else None,
            "retries": r.retries,
            "writes_found_landed": r.writes_found_landed,
            "concurrency_cuts": r.limiter_cuts,
            "concurrency": dict(zip(("ceiling", "lowest", "highest_after_lowest"), r.concurrency, strict=True)),
        },
    }
    if not r.dry_run:
        out["manifest"] = r.manifest
        out["job"] = r.totals
        out["problems"] = r.reasons
        out["exit_code"] = r.exit_code
    return out


def print_copy(r: Any, s: dict[str, Any], json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps(s, indent=2, sort_keys=True))
    t = s["this_run"]
    lines: list[str] = []
    if r.dry_run:
        lines.append(
            f"dry run: would copy {t['listed']:,} versions ({human_bytes(t['listed_bytes'])}), "
            f"{t['delete_markers']:,} of them delete markers, from {s['shards']} shards; nothing was written"
        )
    else:
        j = s["job"]
        lines.append(
            f"this run: {t['copied']:,} copied ({human_bytes(t['copied_bytes'])}) in {s['elapsed_seconds']:.1f} s "
            f"({t['versions_per_second']:,.0f}/s), {t['failed']:,} failed, {t['skipped']:,} skipped"
            + (f", {t['recovered_after_crash']} found already copied" if t["recovered_after_crash"] else "")
        )
        if t["retries"] or t["concurrency_cuts"]:
            cc = t["concurrency"]
            lines.append(
                f"retried {t['retries']:,} requests"
                + (f" ({t['writes_found_landed']} writes found landed, not resent)" if t["writes_found_landed"] else "")
                + (
                    f"; throttled: concurrency cut {t['concurrency_cuts']}× from {cc['ceiling']} "
                    f"down to {cc['lowest']}, back up to {cc['highest_after_lowest']}"
                    if t["concurrency_cuts"]
                    else ""
                )
            )
        lines.append(
            f"job: {j['copied']:,} of {j['versions']:,} versions copied, {j['failed']:,} failed, "
            f"{j['skipped']:,} skipped, {j['pending']:,} pending; shards listed {j['shards_listed']}/{j['shards']}"
        )
        for reason, n in list(s["problems"].items())[:10]:
            lines.append(f"  {n:,} × {reason}")
        if j["failed"]:
            lines.append(
                "run the same command again to retry the failed versions; "
                f"details: backfill status --manifest {r.manifest}"
            )
    typer.echo("\n".join(lines), err=json_out)


def verify_summary(r: Any) -> dict[str, Any]:
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


def print_job(result: Any, json_out: bool) -> None:
    """The summary of a multi-shard run (backfill.distributed's JobResult)."""
    if json_out:
        typer.echo(json.dumps(result.summary(), indent=2, sort_keys=True))
    typer.echo("\n".join(result.lines()), err=json_out)
    for e in result.errors[:1]:
        typer.echo(f"backfill: error: {e}", err=True)
