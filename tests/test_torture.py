"""Crash-resume torture in CI: 20 SIGKILLs (and 2 Ctrl-Cs) at random moments; nothing lost or duplicated.

The size is CI's: ~1,000 small versions and a dozen 6-12 MiB multipart ones, so
that 22 stops and resumes take about a minute on 2 shared cores. A larger run:
`python -m benchmarks.torture --keys 5000 --kills 50`. The seed can be changed with
BACKFILL_TORTURE_SEED to explore other moments.
"""

from __future__ import annotations

import os
import time

from tests.conftest import Store
from tests.torture import check, seed, torture

KEYS = 1200
BIG = 8
KILLS = 20
SIGINTS = 2
SEED = int(os.environ.get("BACKFILL_TORTURE_SEED", "2026"))


def test_twenty_kills_lose_and_duplicate_nothing(seaweed: Store, manifest: str) -> None:
    src, dst = seaweed.buckets()
    t = time.monotonic()
    seeded = seed(seaweed, src, KEYS, BIG, SEED)
    print(f"seeded {seeded.versions} versions ({seeded.delete_markers} delete markers) in {time.monotonic() - t:.1f} s")
    outcome = torture(
        seaweed, src, dst, manifest, total=seeded.versions, kills=KILLS, sigints=SIGINTS, seed=SEED, log=print
    )
    killed = [s for s in outcome.stops if s.kind != "sigint" and s.exit_code != 0]
    assert len(killed) == KILLS, f"the job finished after {len(killed)} kills: seed more versions"
    assert outcome.count("multipart", hit=True) >= 1, "no kill came during a multipart copy"
    assert outcome.count("write", hit=True) >= 1, "no kill came during a manifest write"
    t = time.monotonic()
    check(seaweed, src, dst, manifest, seeded, outcome)
    print(f"stops and resumes took {outcome.seconds:.1f} s, the checks {time.monotonic() - t:.1f} s")
