"""Speed-up from 1 to 2 Dask worker processes: `backfill copy --engine dask` of N small objects.

    python -m benchmarks.dask_scaling [--objects 8000] [--workers 1 2] [--shards 24] [--repeat 2]

SeaweedFS is pinned to CPU 0 (taskset); the driver and the LocalCluster's worker processes
(1 thread each) are not pinned, so on a 2-core machine the workers share the cores with the
server. Each run copies into a fresh replica bucket with a fresh --state directory. For
reference the single-process `--manifest` mode runs on the same bucket too. Prints one JSON
line per run: wall seconds of the whole command (Python and cluster start-up included) and the
job's own elapsed seconds (from the shards' submission to the last result).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

from backfill.seaweed import local_s3
from benchmarks.common import Shape, seed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=8000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--shards", type=int, default=24)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    with tempfile.TemporaryDirectory() as tmp, local_s3(Path(tmp) / "sw", cpu=0 if pin else None) as s:
        c = boto3.client(
            "s3",
            endpoint_url=s.endpoint_url,
            aws_access_key_id=s.access_key,
            aws_secret_access_key=s.secret_key,
            region_name="us-east-1",
            config=Config(max_pool_connections=32, s3={"addressing_style": "path"}),
        )
        t = time.monotonic()
        seed(c, s.endpoint_url, s.env(), "bench-src", Shape(args.objects), Path(tmp), None)
        print(f"seeded {args.objects} objects in {time.monotonic() - t:.1f} s", file=sys.stderr)
        env = {**os.environ, **s.env()}
        runs = [("manifest", 1)] + [("dask", w) for w in args.workers]
        n = 0
        for _ in range(args.repeat):
            for mode, workers in runs:
                n += 1
                dst = f"bench-dst-{n}"
                c.create_bucket(Bucket=dst)
                c.put_bucket_versioning(Bucket=dst, VersioningConfiguration={"Status": "Enabled"})
                cmd = [sys.executable, "-m", "backfill", "copy", "s3://bench-src", f"s3://{dst}", "--json"]
                cmd += ["--versions", "latest", "--concurrency", str(args.concurrency)]
                if mode == "manifest":
                    cmd += ["--manifest", str(Path(tmp) / f"m{n}.db")]
                else:
                    cmd += ["--engine", "dask", "--workers", str(workers), "--shards", str(args.shards)]
                    cmd += ["--state", str(Path(tmp) / f"state{n}")]
                t = time.monotonic()
                p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                wall = time.monotonic() - t
                if p.returncode != 0:
                    sys.exit(f"backfill failed ({p.returncode}): {p.stderr[-2000:]}")
                out = json.loads(p.stdout)
                copied = out["this_run"]["copied"]
                assert copied == args.objects, (copied, args.objects)
                elapsed = out["elapsed_seconds"]
                row = {
                    "mode": mode,
                    "workers": workers,
                    "objects": args.objects,
                    "wall_seconds": round(wall, 2),
                    "job_seconds": round(elapsed, 2),
                    "versions_per_second_job": round(copied / elapsed, 1),
                    "shards": out["shards"],
                    "pinned_server": pin,
                }
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
