"""Operator features against real servers: the estimate's request counts against what a run sends,
an inventory-driven copy against a listing-driven one.

Requests are counted by the test bed's proxy (testbed.proxy with inspect=True parses each request
and counts it by S3 operation) between the CLI and the server.
"""

from __future__ import annotations

import json
from pathlib import Path

from testbed.proxy import ThreadedProxy
from testbed.store import Store

MiB = 1024 * 1024

# The estimate's request kinds and the operations the proxy counts for them.
KINDS = {
    "list": ("ListObjectVersions", "ListObjectsV2"),
    "head": ("HeadObject",),
    "get_tagging": ("GetObjectTagging",),
    "copy": ("CopyObject",),
    "create_multipart": ("CreateMultipartUpload",),
    "upload_part_copy": ("UploadPartCopy",),
    "complete_multipart": ("CompleteMultipartUpload",),
    "delete": ("DeleteObject",),
}


def _seed(store: Store, bucket: str) -> None:
    """Small objects with several versions, delete markers, and multipart objects above an 8 MiB threshold:
    one uploaded in 2 parts (its ETag "-2"), one uploaded whole (split by --part-size)."""
    c = store.client
    for i in range(30):
        key = f"dir{i % 3}/k{i:03d}"
        for n in range(1 + i % 3):
            c.put_object(Bucket=bucket, Key=key, Body=f"{key} v{n}".encode())
        if i % 4 == 0:
            c.delete_object(Bucket=bucket, Key=key)  # a delete marker
    up = c.create_multipart_upload(Bucket=bucket, Key="big/parts")
    parts = []
    for n, size in ((1, 6 * MiB), (2, 4 * MiB)):
        r = c.upload_part(Bucket=bucket, Key="big/parts", UploadId=up["UploadId"], PartNumber=n, Body=b"p" * size)
        parts.append({"ETag": r["ETag"], "PartNumber": n})
    c.complete_multipart_upload(
        Bucket=bucket, Key="big/parts", UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
    )
    c.put_object(Bucket=bucket, Key="big/whole", Body=b"w" * (12 * MiB))


def test_the_estimate_counts_the_requests_a_run_then_sends(store: Store, tmp_path: Path) -> None:
    src, dst = store.buckets()
    _seed(store, src)
    manifest = str(tmp_path / "m.db")
    opts = ["--multipart-threshold", "8MiB", "--part-size", "5MiB", "--manifest", manifest]
    with ThreadedProxy(store.endpoint, inspect=True) as dry_proxy:
        dry = store.run("copy", f"s3://{src}", f"s3://{dst}", *opts, "--dry-run", "--json",
                        "--endpoint-url", dry_proxy.endpoint_url)  # fmt: skip
        dry_stats = dict(dry_proxy.stats)
    assert dry.code == 0, dry.stderr
    est = json.loads(dry.stdout)["estimate"]
    assert not Path(manifest).exists()
    with ThreadedProxy(store.endpoint, inspect=True) as proxy:
        run = store.run("copy", f"s3://{src}", f"s3://{dst}", *opts, "--endpoint-url", proxy.endpoint_url)
        stats = dict(proxy.stats)
    assert run.code == 0, run.stderr
    sent = {k: sum(stats.get(f"requests:{op}", 0) for op in ops) for k, ops in KINDS.items()}
    assert {k: est["requests"][k] for k in KINDS} == sent, (est["requests"], stats)
    # the dry run listed exactly what the run listed, and wrote nothing
    assert sum(dry_stats.get(f"requests:{op}", 0) for op in KINDS["list"]) == sent["list"]
    assert not any(dry_stats.get(f"requests:{op}", 0) for k in ("copy", "delete") for op in KINDS[k])
    assert sent["upload_part_copy"] == 2 + 3 and sent["delete"] == 8  # the layouts: 2 parts, 12 MiB / 5 MiB
    assert est["bytes_copied"] == 10 * MiB + 12 * MiB + sum(
        len(f"dir{i % 3}/k{i:03d} v0") * (1 + i % 3) for i in range(30)
    )
    # the run printed the estimate's one line once listing was done
    assert "estimate: " in run.stderr and "(listing done)" in run.stderr
    # a dry run of the finished job estimates what is left: nothing
    again = store.run("copy", f"s3://{src}", f"s3://{dst}", *opts, "--dry-run", "--json")
    assert again.code == 0, again.stderr
    left = json.loads(again.stdout)["estimate"]
    assert left["remaining"] and left["versions"] == 0 and left["requests"]["copy"] == 0
