"""First throughput figure: `backfill copy` of N small objects on a local SeaweedFS.

    python -m benchmarks.copy [--objects 5000] [--concurrency 64] [--versions latest|all]

The server is pinned to CPU 0 and the client to CPU 1 (taskset), as TESTBED.md
advises on this 2-core machine. Prints wall time, versions/s, the client's CPU
time per copy (getrusage of the child) and its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from backfill.seaweed import local_s3


def seed(client: Any, bucket: str, n: int, versions: int) -> None:
    body = os.urandom(1024)

    def one(i: int) -> None:
        for _ in range(versions):
            client.put_object(Bucket=bucket, Key=f"p{i % 16:02d}/obj-{i:07d}", Body=body)

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(one, range(n)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=5000)
    ap.add_argument("--versions-per-key", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--versions", default="latest")
    ap.add_argument("--verify", action="store_true", help="also time a verify and its peak RSS")
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
        for b in ("bench-src", "bench-dst"):
            c.create_bucket(Bucket=b)
            c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
        t = time.monotonic()
        seed(c, "bench-src", args.objects, args.versions_per_key)
        print(
            f"seeded {args.objects} x {args.versions_per_key} versions in {time.monotonic() - t:.1f} s", file=sys.stderr
        )
        cmd = [
            sys.executable,
            "-m",
            "backfill",
            "copy",
            "s3://bench-src",
            "s3://bench-dst",
            "--manifest",
            str(Path(tmp) / "m.db"),
            "--concurrency",
            str(args.concurrency),
            "--versions",
            args.versions,
            "--json",
        ]
        if pin:
            cmd = ["taskset", "-c", "1", *cmd]
        env = {**os.environ, **s.env()}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.monotonic()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if p.returncode != 0:
            sys.exit(f"backfill failed ({p.returncode}): {p.stderr}")
        summary = json.loads(p.stdout)
        copied = summary["this_run"]["copied"]
        expected = args.objects * (args.versions_per_key if args.versions == "all" else 1)
        assert copied == expected, (copied, expected)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        result = {
            "objects": args.objects,
            "versions_copied": copied,
            "concurrency": args.concurrency,
            "wall_seconds": round(wall, 2),
            "versions_per_second": round(copied / wall, 1),
            "client_cpu_ms_per_copy": round(cpu * 1000 / copied, 3),
            "client_peak_rss_mib": round(after.ru_maxrss / 1024, 1),
            "first_copy_seconds": summary["this_run"]["first_copy_seconds"],
            "manifest_bytes_per_version": round(sum(f.stat().st_size for f in Path(tmp).glob("m.db*")) / copied, 1),
            "pinned": pin,
        }
        if args.verify:
            # Peak RSS of the verify process alone (a wrapper process reports its only child).
            vcmd = [sys.executable, "-m", "backfill", "verify", "s3://bench-src", "s3://bench-dst", "--json"]
            if args.versions == "latest":
                vcmd += ["--versions", "latest"]
            wrapper = (
                "import resource, subprocess, sys, time; t = time.monotonic(); "
                "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                "print(p.returncode, time.monotonic() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
            )
            w = subprocess.run([sys.executable, "-c", wrapper, *vcmd], env=env, capture_output=True, text=True)
            code, seconds, rss = w.stdout.split()
            assert code == "0", w.stderr
            result["verify_seconds"] = round(float(seconds), 2)
            result["verify_peak_rss_mib"] = round(int(rss) / 1024, 1)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
