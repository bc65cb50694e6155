"""`python -m benchmarks.checkpoint --versions N [--rate R]`: the manifest writer's cost alone.

`backfill copy` has no switch that turns checkpointing off (the manifest is what
makes a run resumable), so its cost is measured apart: backfill's own Checkpoint
writer and Manifest, fed the messages a copy of N one-version keys sends — pages of
1,000 listed keys, then one outcome per version, paced at R outcomes per second so
that the writer batches them as it does in a real run (at most 0.2 s per batch).
Prints JSON: the CPU seconds of checkpointing (process CPU, all threads — the
SQLite commits run in a worker thread — minus the same feed into a dry run's
Checkpoint, which writes nothing), wall seconds, and the manifest's size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import anyio

from backfill.manifest import Manifest
from backfill.models import Item, KeyJob, Shard, State, Version
from backfill.pipeline.checkpoint import Checkpoint

PAGE = 1000


async def probe(n: int, rate: float, path: Path | None) -> dict[str, float]:
    """Feed a Checkpoint; with no path, a dry run's (which writes nothing): the probe's own cost."""
    manifest = None
    if path is not None:
        manifest = Manifest.open(str(path), {"source": "s3://probe-src", "dest": "s3://probe-dst"}, create=True)
        manifest.save_shards([Shard(0, "", None, None)])
    checkpoint = Checkpoint(manifest)
    cpu, wall = time.process_time(), time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(checkpoint.run)
        tick = 0.01
        per_tick = max(1, int(rate * tick))
        for start in range(0, n, PAGE):
            jobs = [
                KeyJob(
                    0,
                    f"p{i % 16:02x}/obj-{i:07d}",
                    [
                        Item(
                            0,
                            Version(
                                f"p{i % 16:02x}/obj-{i:07d}", f"{i:032x}", 1024, f"{i:032x}", "2026-11-25T00:00:00Z"
                            ),
                        )
                    ],
                )
                for i in range(start, min(n, start + PAGE))
            ]
            await checkpoint.listed(0, jobs, jobs[-1].key, start + PAGE >= n)
            for k in range(0, len(jobs), per_tick):
                t = time.monotonic()
                for job in jobs[k : k + per_tick]:
                    await checkpoint.outcome(job.key, 0, State.COPIED, job.items[0].version.version_id[::-1])
                await anyio.sleep(max(0.0, tick - (time.monotonic() - t)))
        await checkpoint.close()
    result = {"cpu_seconds": time.process_time() - cpu, "wall_seconds": time.monotonic() - wall}
    if manifest is not None and path is not None:
        manifest.close()
        result["manifest_bytes"] = sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.checkpoint", description=__doc__)
    ap.add_argument("--versions", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=1000.0, help="outcomes per second (the copy's own rate)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = anyio.run(probe, args.versions, args.rate, None)
        real = anyio.run(probe, args.versions, args.rate, Path(tmp) / "probe.db")
    cpu = real["cpu_seconds"] - base["cpu_seconds"]
    out = {
        "versions": args.versions,
        "rate": args.rate,
        "cpu_seconds": round(cpu, 4),
        "cpu_us_per_version": round(cpu * 1e6 / args.versions, 2),
        "probe_cpu_seconds": round(base["cpu_seconds"], 4),
        "wall_seconds": round(real["wall_seconds"], 2),
        "manifest_bytes": real["manifest_bytes"],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
