"""The summary of `backfill copy`: one structure for both modes (the CLI prints it as JSON or text).

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
from backfill.progress import Counters

# The counters of a run that add up across shards (progress and outcomes carry these).
COUNTED = (
    "listed",
    "listed_bytes",
    "copied",
    "copied_bytes",
    "delete_markers",
    "recovered",
    "failed",
    "skipped",
    "expired_retentions",
    "left_to_replication",
    "current_fixes",
    "replication_heads",
)
JOB_KEYS = (
    "versions",
    "copied",
    "failed",
    "skipped",
    "pending",
    "left_to_replication",
    "current_fixes",
    "shards",
    "shards_listed",
)


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
            "expired_retentions": t.get("expired_retentions", 0),
            "left_to_replication": t.get("left_to_replication", 0),
            "current_fixes": t.get("current_fixes", 0),
            "replication_heads": t.get("replication_heads", 0),
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
    out = build(
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
    if r.estimate is not None:
        out["estimate"] = r.estimate
        out["estimate_lines"] = r.estimate_lines
    return out
