"""The summary of `backfill copy`: one structure for both modes, as JSON (`--json`) and as text.

A single-machine run (`--manifest`) builds it from its RunResult; a multi-shard job
(`--state`) from its shard outcomes, merged (distributed.job.JobResult). Both have the
same keys with the same meaning (README: "The summary of a copy"); a multi-shard job
adds `state`, `engine`, `errors` and `this_run.shards_run`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backfill.pipeline.run import RunResult
from backfill.pipeline.sides import PaceStats
from backfill.progress import Counters, human_bytes

# The counters of a run that add up across shards (progress and outcomes carry these).
COUNTED = ("listed", "listed_bytes", "copied", "copied_bytes", "delete_markers", "recovered", "failed", "skipped")
JOB_KEYS = ("versions", "copied", "failed", "skipped", "pending", "shards", "shards_listed")


def counts(c: Counters) -> dict[str, int]:
    return {f: int(getattr(c, f)) for f in COUNTED}


def build(
    *,
    dry_run: bool,
    interrupted: bool,
    elapsed: float,
    shards: int,
    this_run: Mapping[str, int],
    first_copy_seconds: float | None,
    pacing: PaceStats,
    manifest: str | None,
    totals: Mapping[str, int],
    reasons: Mapping[str, int],
    exit_code: int,
) -> dict[str, Any]:
    """The summary's structure. `this_run`: the COUNTED values of this run; `totals`: the job's (JOB_KEYS)."""
    t = this_run
    out: dict[str, Any] = {
        "dry_run": dry_run,
        "interrupted": interrupted,
        "elapsed_seconds": round(elapsed, 3),
        "shards": shards,
        "this_run": {
            "listed": t.get("listed", 0),
            "listed_bytes": t.get("listed_bytes", 0),
            "copied": t.get("copied", 0),
            "copied_bytes": t.get("copied_bytes", 0),
            "delete_markers": t.get("delete_markers", 0),
            "recovered_after_crash": t.get("recovered", 0),
            "failed": t.get("failed", 0),
            "skipped": t.get("skipped", 0),
            "versions_per_second": round(t.get("copied", 0) / elapsed, 1) if elapsed > 0 else 0.0,
            "first_copy_seconds": round(first_copy_seconds, 3) if first_copy_seconds is not None else None,
            "retries": pacing.retries,
            "writes_found_landed": pacing.writes_found_landed,
            "concurrency_cuts": pacing.concurrency_cuts,
            "concurrency": {
                "ceiling": pacing.ceiling,
                "lowest": pacing.lowest,
                "highest_after_lowest": pacing.highest_after_lowest,
            },
        },
    }
    if not dry_run:
        out["manifest"] = manifest
        out["job"] = {k: totals.get(k, 0) for k in JOB_KEYS}
        out["problems"] = dict(sorted(reasons.items(), key=lambda kv: -kv[1]))
        out["exit_code"] = exit_code
    return out


def from_run(r: RunResult) -> dict[str, Any]:
    """The summary of a single-machine run."""
    c = r.counters
    return build(
        dry_run=r.dry_run,
        interrupted=r.interrupted,
        elapsed=c.elapsed(),
        shards=c.shards,
        this_run=counts(c),
        first_copy_seconds=c.first_copy_at,
        pacing=r.pacing,
        manifest=r.manifest,
        totals=r.totals,
        reasons=r.reasons,
        exit_code=r.exit_code,
    )


def lines(s: Mapping[str, Any]) -> list[str]:
    """The summary as text (stderr with --json, stdout otherwise), for both modes."""
    t = s["this_run"]
    if s["dry_run"]:
        return [
            f"dry run: would copy {t['listed']:,} versions ({human_bytes(t['listed_bytes'])}), "
            f"{t['delete_markers']:,} of them delete markers, from {s['shards']} shards; nothing was written"
        ]
    sharded = "state" in s
    j = s["job"]
    where = f" ({s['engine']}, {t['shards_run']}/{s['shards']} shards)" if sharded else ""
    out = [
        f"this run{where}: {t['copied']:,} copied ({human_bytes(t['copied_bytes'])}) in {s['elapsed_seconds']:.1f} s "
        f"({t['versions_per_second']:,.0f}/s), {t['failed']:,} failed, {t['skipped']:,} skipped"
        + (f", {t['recovered_after_crash']} found already copied" if t["recovered_after_crash"] else "")
    ]
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
