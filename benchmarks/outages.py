"""Outages, many times over: what they cost, and whether any run loses or duplicates a version.

    python -m benchmarks.outages --rounds 20 [--versions 4000] [--outages 1] [--seconds 6]
        [--http lean|botocore] [--rerun]   # --rerun: run the copy again when it ends exit 1 (today's remedy)

Each round copies one seeded source bucket (4,000 versions by default, written once) into a fresh
replica bucket while testbed.outage kills SeaweedFS with SIGKILL at random moments (by versions
recorded) for `--seconds` and starts it again on the same ports and data. It prints per round the
exit codes, what the replica holds against the source (missing, extra), and each outage's cost:
seconds from the server's return to the next version recorded copied (the manifest's writer
batches its commits; that delay is included). A key with a version too many is diagnosed: every
replica version of it with its LastModified against the outage's kill and restart, and the
manifest's rows for it, so that it can be told whether the extra version was written by a
request sent before the kill (and sent again after) or appeared with no request of ours.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from backfill.seaweed import LocalS3, seaweed_server
from testbed.outage import Outages, random_plan


def _client(info: LocalS3) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=info.endpoint_url,
        aws_access_key_id=info.access_key,
        aws_secret_access_key=info.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 8}),
    )


def _bucket(c: Any, name: str) -> None:
    c.create_bucket(Bucket=name)
    c.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})


def seed(c: Any, bucket: str, versions: int) -> int:
    keys = versions * 10 // 11

    def one(i: int) -> int:
        key = f"d{i % 10}/k{i:05d}"
        n = 0
        for v in range(2 if i % 10 == 0 else 1):
            c.put_object(Bucket=bucket, Key=key, Body=f"{key} v{v}".encode())
            n += 1
        return n

    with ThreadPoolExecutor(16) as pool:
        return sum(pool.map(one, range(keys)))


def histories(c: Any, bucket: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for page in c.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for e in page.get("Versions", []) + page.get("DeleteMarkers", []):
            out.setdefault(e["Key"], []).append(
                {
                    "vid": e["VersionId"],
                    "etag": e.get("ETag", ""),
                    "size": e.get("Size", -1),
                    "at": e["LastModified"].timestamp(),
                }
            )
    return out


def run_copy(info: LocalS3, src: str, dst: str, manifest: str, http: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | info.env()
    args = ["copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json", "--http", http]
    return subprocess.run(
        [sys.executable, "-m", "backfill", *args], env=env, capture_output=True, text=True, check=False, timeout=900
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--versions", type=int, default=4000)
    ap.add_argument("--outages", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--http", default="lean")
    ap.add_argument("--rerun", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="", help="append one JSON line per round here")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    costs: list[float] = []
    bad = 0
    with tempfile.TemporaryDirectory(prefix="outages-") as tmp, seaweed_server(Path(tmp) / "seaweed") as server:
        c = _client(server.info)
        _bucket(c, "src")
        total = seed(c, "src", a.versions)
        source = histories(c, "src")
        print(f"seeded {total} versions", flush=True)
        for rnd in range(a.rounds):
            dst, manifest = f"dst-{rnd}", str(Path(tmp) / f"round-{rnd}.db")
            _bucket(c, dst)
            plan = random_plan(rng, manifest, total, a.outages, (a.seconds, a.seconds))
            started = time.monotonic()
            with Outages(server, plan, manifest=manifest) as o:
                r = run_copy(server.info, "src", dst, manifest, a.http)
            codes = [r.returncode]
            if a.rerun and r.returncode == 1:
                r2 = run_copy(server.info, "src", dst, manifest, a.http)
                codes.append(r2.returncode)
            replica = histories(c, dst)
            missing = sum(max(0, len(v) - len(replica.get(k, []))) for k, v in source.items())
            extra_keys = {k: v for k, v in replica.items() if len(v) > len(source.get(k, []))}
            extra = sum(len(v) - len(source.get(k, [])) for k, v in extra_keys.items())
            round_costs = [h.next_copy for h in o.log if h.fired]
            costs += [x for x in round_costs if x == x]
            row: dict[str, Any] = {
                "round": rnd,
                "codes": codes,
                "seconds": round(time.monotonic() - started, 1),
                "missing": missing,
                "extra": extra,
                "outages": [(round(h.began, 3), round(h.ended, 3), round(h.next_copy, 2)) for h in o.log if h.fired],
                "stderr_tail": r.stderr.strip().splitlines()[-3:],
            }
            if extra_keys:
                bad += 1
                with sqlite3.connect(manifest) as db:
                    row["diagnosis"] = {
                        k: {
                            "replica": v,
                            "manifest": db.execute(
                                "SELECT seq, vid, state, rvid, why FROM version WHERE key = ? ORDER BY seq", (k,)
                            ).fetchall(),
                        }
                        for k, v in list(extra_keys.items())[:3]
                    }
            line = json.dumps(row)
            print(line, flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(line + "\n")
    if costs:
        print(
            f"outage cost (s from the server's return to the next copy): n={len(costs)} "
            f"median={statistics.median(costs):.2f} max={max(costs):.2f}",
            flush=True,
        )
    print(f"rounds with a version too many: {bad} of {a.rounds}", flush=True)


if __name__ == "__main__":
    main()
