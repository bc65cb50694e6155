"""`backfill demo`: the whole job on a local SeaweedFS, start to finish, in under a minute.

It starts a throwaway S3 server, fills a versioned bucket with a history worth
backing up (several versions, delete markers, a multipart object, awkward keys),
prints the replication set-up for it (`backfill setup plan`: the documents and
the steps; applying them needs IAM and S3 replication, which a local server
lacks, so the demo only makes the two versioned buckets that apply would), runs
the real `backfill copy` and `backfill status` commands against it, runs the
copy again to show that a rerun resumes (and here finds nothing left to do), and
verifies the replica against the source, version by version.
"""

from __future__ import annotations

import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aioboto3
import anyio
from aiobotocore.config import AioConfig

from backfill.seaweed import LocalS3, local_s3

SOURCE = "demo-important-data"
REPLICA = "demo-important-data-replica"
MiB = 1024 * 1024

AWKWARD_KEYS = [
    "awkward/with space.txt",
    "awkward/plus+sign.txt",
    "awkward/percent%20literal.txt",
    "awkward/ünïcødé/日本語.txt",
    "awkward/emoji-🚀.txt",
    "awkward/empty-object",
    "awkward/" + "k" * 200,
]


def _client(s: LocalS3) -> Any:
    return aioboto3.Session().client(
        "s3",
        endpoint_url=s.endpoint_url,
        aws_access_key_id=s.access_key,
        aws_secret_access_key=s.secret_key,
        region_name="us-east-1",
        config=AioConfig(max_pool_connections=32, s3={"addressing_style": "path"}),
    )


async def seed(s: LocalS3, objects: int) -> dict[str, int]:
    """Create the demo buckets and the source's history. Returns what was made."""
    rng = random.Random(20261125)  # noqa: S311 - reproducible demo data
    made = {"keys": 0, "versions": 0, "delete_markers": 0}
    async with _client(s) as c:
        for b in (SOURCE, REPLICA):
            await c.create_bucket(Bucket=b)
            await c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
        keys = [f"{d}/{rng.choice(['2024', '2025', '2026'])}/item-{i:05d}.json" for i, d in _dirs(objects, rng)]
        keys += AWKWARD_KEYS
        limit = anyio.Semaphore(32)

        async def history(key: str) -> None:
            async with limit:
                n = 1 if key.endswith("empty-object") else rng.choice([1, 1, 1, 2, 3])
                for v in range(n):
                    body = b"" if key.endswith("empty-object") else f"{key} v{v} {'x' * rng.randrange(200)}".encode()
                    await c.put_object(
                        Bucket=SOURCE, Key=key, Body=body, Metadata={"demo-version": str(v)}, ContentType="text/plain"
                    )
                    made["versions"] += 1
                if rng.random() < 0.05:
                    await c.delete_object(Bucket=SOURCE, Key=key)
                    made["delete_markers"] += 1
                    if rng.random() < 0.5:  # deleted, then written again
                        await c.put_object(Bucket=SOURCE, Key=key, Body=b"back again")
                        made["versions"] += 1
                made["keys"] += 1

        async with anyio.create_task_group() as tg:
            for k in keys:
                tg.start_soon(history, k)
        # One multipart object (5 MiB + 1 MiB parts), to show a layout-preserving part copy.
        key = "big/multipart.bin"
        up = await c.create_multipart_upload(Bucket=SOURCE, Key=key, Metadata={"kind": "multipart"})
        parts = []
        for n, size in enumerate([5 * MiB, 1 * MiB], start=1):
            r = await c.upload_part(
                Bucket=SOURCE, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=os.urandom(size)
            )
            parts.append({"ETag": r["ETag"], "PartNumber": n})
        await c.complete_multipart_upload(
            Bucket=SOURCE, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
        )
        await c.put_object_tagging(
            Bucket=SOURCE, Key="awkward/with space.txt", Tagging={"TagSet": [{"Key": "team", "Value": "demo"}]}
        )
        made["keys"] += 1
        made["versions"] += 1
    return made


def _dirs(n: int, rng: random.Random) -> list[tuple[int, str]]:
    tops = ["invoices", "photos", "logs", "reports", "exports", "users"]
    return [(i, rng.choice(tops)) for i in range(n)]


def _run(args: Sequence[str], env: dict[str, str]) -> int:
    print(f"\n$ {shlex.join(['backfill', *args])}", flush=True)
    return subprocess.run([sys.executable, "-m", "backfill", *args], env=env, check=False).returncode


def run_demo(objects: int) -> int:
    print("backfill demo: a local SeaweedFS S3 server, a versioned bucket, and a full-history backfill\n")
    with tempfile.TemporaryDirectory(prefix="backfill-demo-") as tmp, local_s3(Path(tmp) / "seaweed") as s:
        print(f"started SeaweedFS (S3 at {s.endpoint_url})")
        t = time.monotonic()
        made = anyio.run(seed, s, objects)
        print(
            f"seeded s3://{SOURCE}: {made['keys']:,} keys, {made['versions']:,} versions, "
            f"{made['delete_markers']:,} delete markers, awkward keys and a 2-part multipart object "
            f"({time.monotonic() - t:.1f} s)"
        )
        env = {**os.environ, **s.env()}
        env.pop("AWS_PROFILE", None)
        print(
            "\nthe replication set-up of such a pair, between two accounts (plan changes nothing; apply needs IAM"
            " and S3 replication, which this local server lacks: the demo made the two versioned buckets itself):"
        )
        plan = [
            "setup",
            "plan",
            "--source",
            f"s3://{SOURCE}",
            "--source-account",
            "111111111111",
            "--source-region",
            "eu-west-1",
            "--replica",
            f"s3://{REPLICA}",
            "--replica-account",
            "222222222222",
            "--replica-region",
            "eu-central-1",
            "--out",
            str(Path(tmp) / "setup"),
        ]
        rc = _run(plan, env)
        if rc != 0:
            print(f"demo: the setup plan exited {rc}", file=sys.stderr)
            return rc
        manifest = str(Path(tmp) / "demo.db")
        copy = [
            "copy",
            f"s3://{SOURCE}",
            f"s3://{REPLICA}",
            "--manifest",
            manifest,
            "--multipart-threshold",
            "5MiB",
            "--shards",
            "8",
        ]
        print("\na dry run first: what the copy will send, cost on AWS (this pair priced as us-east-1) and take:")
        rc = _run([*copy, "--dry-run"], env)
        if rc != 0:
            print(f"demo: the dry run exited {rc}", file=sys.stderr)
            return rc
        rc = _run(copy, env)
        if rc != 0:
            print(f"demo: the copy exited {rc}", file=sys.stderr)
            return rc
        _run(["status", "--manifest", manifest], env)
        print("\nrunning the same command again resumes the job; here nothing is left to do:")
        rc = max(rc, _run(copy, env))
        print(
            "\nverify compares every version of the replica with the source; --deep settles by content the"
            " multipart object, whose part copies SeaweedFS gives another ETag than AWS would:"
        )
        report = str(Path(tmp) / "verify.csv")
        verified = _run(
            ["verify", f"s3://{SOURCE}", f"s3://{REPLICA}", "--manifest", manifest, "--deep", "--report", report], env
        )
        rc = max(rc, verified)
        print("\nstopping SeaweedFS")
    print("demo: done" if rc == 0 else f"demo: something went wrong (exit {rc})")
    return rc
