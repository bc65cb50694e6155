"""Faults injected between backfill and a real SeaweedFS by testbed/proxy.py.

Throttling, 500s, connections reset before and after the server did the work,
stalled responses and CopyObject's "200 OK with an error in the body": the copy
completes, the replica's histories equal the source's (nothing lost, nothing
twice), verify is clean, and the summary shows the concurrency backing off and
recovering. A permission error, on the other hand, stops the run at once.
"""

from __future__ import annotations

import json
import time

import pytest

from backfill.config import COPY_CONCURRENCY
from testbed.faults import Fault
from testbed.proxy import ThreadedProxy
from testbed.seeds import seed_histories
from testbed.store import Store, shape

MIX = [
    # Throttling stops after 50 answers (about half way through the lean run), so that the summary can show
    # the concurrency climbing back: when the lowest cut fell in a run's last seconds, nothing was left to
    # climb with (1 run in 3 failed so, more with uvloop's faster loop).
    Fault("slowdown", 0.05, limit=50),
    Fault("internal_error", 0.01),
    Fault("reset", 0.01),
    Fault("reset_after", 0.01),  # forwarded: the server carried it out, the client never hears
    Fault("stall", 0.01, seconds=3.0),  # longer than --read-timeout below: the request times out
    Fault("error_200", 0.01),
]


@pytest.mark.parametrize("http", ["lean", "botocore"])
def test_copy_completes_through_injected_faults(seaweed: Store, manifest: str, http: str) -> None:
    src, dst = seaweed.buckets()
    counts = seed_histories(seaweed, src, 1000 if http == "lean" else 400, seed=3)
    total = counts["versions"] + counts["delete_markers"]
    with ThreadedProxy(seaweed.endpoint, faults=MIX, seed=11) as proxy:
        r = seaweed.copy_via(proxy.endpoint_url, src, dst, manifest, "--read-timeout", "2", "--http", http)
        stats = proxy.stats
    assert r.code == 0, r.stderr
    assert "Traceback" not in r.stderr
    for kind in ("slowdown", "internal_error", "reset", "reset_after", "stall", "error_200"):
        assert stats.get(kind, 0) > 0, (kind, stats)
    summary = json.loads(r.stdout)
    assert summary["job"]["copied"] == total
    assert summary["job"]["failed"] == 0
    run = summary["this_run"]
    # Every failed request was retried (HeadBucket's retries, at start, are not counted).
    failed_requests = sum(
        n
        for name, n in stats.items()
        if name.partition(":")[0] in ("slowdown", "internal_error", "reset", "error_200")
        and name.partition(":")[2] not in ("", "HeadBucket")
    )
    assert run["retries"] >= failed_requests > 0, (run, stats)
    # Copies and delete markers whose answer was lost were found in the replica, not sent again.
    lost_writes = stats.get("reset_after:CopyObject", 0) + stats.get("reset_after:DeleteObject", 0)
    assert run["writes_found_landed"] >= lost_writes > 0, (run, stats)
    cc = run["concurrency"]
    assert run["concurrency_cuts"] > 0
    assert cc["lowest"] < cc["ceiling"]
    assert cc["highest_after_lowest"] > cc["lowest"], cc  # and it recovered
    assert "throttled: concurrency cut" in r.stderr

    # Nothing lost, nothing twice, in order: the server's own listing says so.
    assert shape(seaweed.history(src)) == shape(seaweed.history(dst))
    v = seaweed.run("verify", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json")
    assert v.code == 0, v.stdout + v.stderr


def test_denied_copies_stop_the_run_at_once(seaweed: Store, manifest: str) -> None:
    src, dst = seaweed.buckets()
    seed_histories(seaweed, src, 300, seed=4)
    denied = [Fault("access_denied", 1.0, op="CopyObject")]
    with ThreadedProxy(seaweed.endpoint, faults=denied, seed=1) as proxy:
        started = time.monotonic()
        r = seaweed.run(
            "copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, env={"AWS_ENDPOINT_URL": proxy.endpoint_url}
        )
        elapsed = time.monotonic() - started
        stats = proxy.stats
    assert r.code == 2, r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("backfill: error:")]
    assert len(errors) == 1 and "access denied" in errors[0], r.stderr
    # A refusal is not retried: at most one attempt per slot (the default ceiling) before the run stops.
    assert stats["access_denied:CopyObject"] <= COPY_CONCURRENCY, stats
    assert elapsed < 30
    assert seaweed.history(dst) == {}
