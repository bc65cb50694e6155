"""The crash-resume torture at any size (tests/test_torture.py runs CI's size).

    python -m benchmarks.torture [--keys 5000] [--big 24] [--kills 50] [--sigints 5] [--seed N]

Starts a local SeaweedFS, seeds a versioned bucket (small keys with 1-3 versions and
delete markers, plus 6-12 MiB objects copied in parts above a 5 MiB threshold),
then stops `backfill copy` with SIGKILL `--kills` times and with Ctrl-C `--sigints`
times at seeded random moments (while starting, while copying, while the manifest
is written, while a multipart copy is open), resuming each time. At the end it
checks what tests/test_torture.py checks: verify clean, no version missing or
duplicated, histories in order, no multipart upload left open, and a sound manifest.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from testbed.servers import seaweedfs
from testbed.torture import check, seed, torture


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=5000, help="small keys (1-3 versions each, some delete markers)")
    ap.add_argument("--big", type=int, default=24, help="keys of 6-12 MiB versions (multipart copies)")
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--sigints", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-rps", type=int, default=300, help="pace of the stopped runs (the last one runs free)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, seaweedfs(Path(tmp) / "sw", identities=False) as store:
        src, dst = store.buckets()
        t = time.monotonic()
        seeded = seed(store, src, args.keys, args.big, args.seed)
        print(
            f"seeded {seeded.versions:,} versions ({seeded.delete_markers:,} delete markers, "
            f"{len(seeded.multipart_keys)} multipart keys) in {time.monotonic() - t:.1f} s",
            file=sys.stderr,
        )
        manifest = str(Path(tmp) / "torture.db")
        outcome = torture(
            store,
            src,
            dst,
            manifest,
            total=seeded.versions,
            kills=args.kills,
            sigints=args.sigints,
            seed=args.seed,
            concurrency=args.concurrency,
            max_rps=args.max_rps,
            log=lambda line: print(line, file=sys.stderr),
        )
        check(store, src, dst, manifest, seeded, outcome)
        kinds = Counter(st.kind for st in outcome.stops)
        hits = Counter(st.kind for st in outcome.stops if st.hit)
        print(
            f"OK: {len(outcome.stops)} stops ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}; "
            f"moments hit: {', '.join(f'{k} {n}' for k, n in sorted(hits.items()))}) and resumes in "
            f"{outcome.seconds:.1f} s; verify clean, nothing missing or duplicated, no upload left open"
        )


if __name__ == "__main__":
    main()
