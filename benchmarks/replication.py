"""A backfill beside emulated live replication, against the same bucket without it.

    python -m benchmarks.replication --objects 10000 --hot-percent 5

One SeaweedFS, one source bucket of `--objects` keys (1 KiB, every tenth key two versions, every
25th deleted), all written before the rule. Three copies of it into fresh replicas, each the real
CLI (`python -m backfill copy --json`, concurrency 64):

1. `direct`: straight to SeaweedFS, no replication (the plain run);
2. `proxy, no rule`: through testbed/replicator.py with the rule off (the proxy's own cost; the
   product must send no HEAD);
3. `replicating`: the rule on, and `--hot-percent` of the keys given a new version after the rule,
   replicated before the backfill starts (replication got ahead: those keys need the final copy
   of the current version).

Prints, per run: wall seconds, HEADs per key (source and replica), ListObjectVersions of the source
(the direct run is not counted: no proxy) and of the
replica, versions left to replication, keys fixed; `--results` appends a table to RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from backfill.seaweed import local_s3
from testbed.replicator import Replicator

ROOT = Path(__file__).resolve().parent.parent


def _client(endpoint: str, key: str, secret: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=32),
    )


def _bucket(c: Any, name: str) -> None:
    c.create_bucket(Bucket=name)
    c.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})


def _seed(c: Any, bucket: str, n: int) -> int:
    filler = b"x" * 1000

    def one(i: int) -> int:
        key = f"d{i % 16:02d}/k{i:06d}"
        versions = 2 if i % 10 == 0 else 1
        for v in range(versions):
            c.put_object(Bucket=bucket, Key=key, Body=f"{key} {v} ".encode() + filler)
        if i % 25 == 0:
            c.delete_object(Bucket=bucket, Key=key)
            versions += 1
        return versions

    with ThreadPoolExecutor(32) as pool:
        return sum(pool.map(one, range(n)))


def _copy(env: dict[str, str], endpoint: str, src: str, dst: str, out: Path) -> tuple[float, dict[str, Any]]:
    manifest = out / f"{dst}.db"
    cmd = [sys.executable, "-m", "backfill", "copy", f"s3://{src}", f"s3://{dst}", "--manifest", str(manifest)]
    cmd += ["--concurrency", "64", "--json"]
    t = time.monotonic()
    p = subprocess.run(cmd, env={**env, "AWS_ENDPOINT_URL": endpoint}, capture_output=True, text=True, check=False)
    wall = time.monotonic() - t
    if p.returncode != 0:
        raise SystemExit(f"copy into {dst} exited {p.returncode}: {p.stderr[-2000:]}")
    return wall, json.loads(p.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=10000)
    ap.add_argument("--hot-percent", type=float, default=5.0)
    ap.add_argument("--results", action="store_true", help="append the table to benchmarks/RESULTS.md")
    a = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with tempfile.TemporaryDirectory() as tmp, local_s3(Path(tmp) / "weed") as s3:
        env = {**base, **s3.env()}
        c = _client(s3.endpoint_url, s3.access_key, s3.secret_key)
        src = "bench-repl-src"
        _bucket(c, src)
        versions = _seed(c, src, a.objects)
        rows: list[dict[str, Any]] = []
        for n, label in enumerate(("direct", "proxy, no rule", "replicating")):
            dst = f"bench-repl-dst{n}"
            _bucket(c, dst)
            if label == "direct":
                wall, s = _copy(env, s3.endpoint_url, src, dst, Path(tmp))
                rows.append({"run": label, "wall": wall, "summary": s, "stats": Counter()})
                continue
            with Replicator(s3.endpoint_url, s3.access_key, s3.secret_key, source=src, replica=dst, lag=0.0) as r:
                hot = 0
                if label == "replicating":
                    r.rule_on()
                    pc = _client(r.endpoint_url, s3.access_key, s3.secret_key)
                    step = max(1, round(100 / a.hot_percent)) if a.hot_percent > 0 else 0
                    keys = [f"d{i % 16:02d}/k{i:06d}" for i in range(0, a.objects, step)] if step else []
                    with ThreadPoolExecutor(16) as pool:
                        list(pool.map(lambda k, c=pc: c.put_object(Bucket=src, Key=k, Body=b"after the rule"), keys))
                    hot = len(keys)
                    r.drain(600)
                before = Counter(r.stats)
                wall, s = _copy(env, r.endpoint_url, src, dst, Path(tmp))
                rows.append({"run": label, "wall": wall, "summary": s, "stats": Counter(r.stats) - before, "hot": hot})
        keys = a.objects
        lines = [
            f"Command: `python -m benchmarks.replication --objects {a.objects} --hot-percent {a.hot_percent:g}` "
            f"({versions:,} versions in {keys:,} keys before the rule)",
            "",
            "| run | wall s | HEAD source / key | HEAD replica / key | source listings | replica listings "
            "| left to replication | keys fixed | copied |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            st, job = row["stats"], row["summary"].get("job", {})
            lines.append(
                f"| {row['run']} | {row['wall']:.2f} | {st['HeadObject:source'] / keys:.3f} | "
                f"{st['HeadObject:replica'] / keys:.3f} | {st['ListObjectVersions:source'] or '–'} | "
                f"{st['ListObjectVersions:replica']} | "
                f"{job.get('left_to_replication', 0):,} | {job.get('current_fixes', 0):,} | {job.get('copied', 0):,} |"
            )
        uname = platform.uname()
        lines += [
            "",
            f"Machine: {os.cpu_count()} cores, {uname.system} {uname.release}, Python {platform.python_version()}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load {os.getloadavg()[0]:.2f}; not pinned.",
        ]
        text = "\n".join(lines)
        print(text)
        if a.results:
            with (ROOT / "benchmarks" / "RESULTS.md").open("a") as f:
                f.write("\n## A backfill beside live replication (emulated)\n\n" + text + "\n")


if __name__ == "__main__":
    main()
