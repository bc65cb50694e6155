"""Operator features against real servers: the estimate's request counts against what a run sends,
an inventory-driven copy against a listing-driven one.

Requests are counted by the test bed's proxy (testbed.proxy with inspect=True parses each request
and counts it by S3 operation) between the CLI and the server.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

from testbed.faults import Fault
from testbed.inventory import Row, report
from testbed.proxy import ThreadedProxy
from testbed.seeds import seed_histories
from testbed.store import Store, shape

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


def _report_of(store: Store, bucket: str, files: int) -> tuple[dict[str, bytes], str]:
    """The inventory report S3 would deliver for `bucket` (testbed.inventory), its rows newest first per key
    (as ListObjectVersions lists them), spread over `files` data files."""
    c = store.client
    stamps: dict[str, str] = {}
    for page in c.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            t: datetime = v["LastModified"].astimezone(UTC)
            stamps[v["VersionId"]] = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    rows: list[Row] = []
    for key, history in sorted(store.history(bucket).items()):
        for n, (dm, size, etag, vid) in enumerate(reversed(history)):
            rows.append(Row(key, vid, 0, size=size, dm=dm, latest=n == 0, etag=etag, last_modified=stamps[vid]))
    per = -(-len(rows) // files)
    return report([rows[i : i + per] for i in range(0, len(rows), per)], source=bucket, destination="inv")


def test_an_inventory_driven_copy_makes_the_replica_a_listing_makes(store: Store, tmp_path: Path) -> None:
    src, by_listing = store.buckets()
    _, by_inventory = store.buckets()
    seed_histories(store, src, 40)
    inv = f"inv-{src}"
    store.client.create_bucket(Bucket=inv)
    objects, mkey = _report_of(store, src, files=3)
    for key, data in objects.items():
        store.client.put_object(Bucket=inv, Key=key, Body=data)
    # the report names its destination bucket by ARN: point it at the bucket it is in
    manifest_json = json.loads(objects[mkey])
    manifest_json["destinationBucket"] = f"arn:aws:s3:::{inv}"
    store.client.put_object(Bucket=inv, Key=mkey, Body=json.dumps(manifest_json).encode())
    store.client.delete_object(Bucket=inv, Key=mkey.removesuffix("manifest.json") + "manifest.checksum")

    listed = store.run("copy", f"s3://{src}", f"s3://{by_listing}", "--manifest", str(tmp_path / "l.db"))
    assert listed.code == 0, listed.stderr
    dry = store.run("copy", f"s3://{src}", f"s3://{by_inventory}", "--manifest", str(tmp_path / "i.db"),
                    "--inventory", f"s3://{inv}/{mkey}", "--dry-run", "--json")  # fmt: skip
    assert dry.code == 0, dry.stderr
    versions = sum(len(h) for h in store.history(src).values())
    assert json.loads(dry.stdout)["estimate"]["versions"] == versions
    assert json.loads(dry.stdout)["estimate"]["requests"]["list"] == 0  # no listing of the source
    run = store.run("copy", f"s3://{src}", f"s3://{by_inventory}", "--manifest", str(tmp_path / "i.db"),
                    "--inventory", f"s3://{inv}/{mkey}")  # fmt: skip
    assert run.code == 0, run.stderr
    assert "(from the inventory)" in run.stderr
    assert shape(store.history(by_inventory)) == shape(store.history(by_listing)) == shape(store.history(src))
    # the same command again: the job is complete, nothing is copied twice
    again = store.run("copy", f"s3://{src}", f"s3://{by_inventory}", "--manifest", str(tmp_path / "i.db"),
                      "--inventory", f"s3://{inv}/{mkey}", "--json")  # fmt: skip
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["this_run"]["copied"] == 0
    assert shape(store.history(by_inventory)) == shape(store.history(src))


def test_the_inventory_refusals_are_one_line(store: Store, tmp_path: Path) -> None:
    src, dst = store.buckets()
    store.client.put_object(Bucket=src, Key="k", Body=b"x")
    objects, mkey = report([[Row("k", "v", 0, latest=True)]], source="another-bucket")
    root = tmp_path / "inv"
    for key, data in objects.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    r = store.run("copy", f"s3://{src}", f"s3://{dst}", "--inventory", str(root / mkey), "--dry-run")
    assert r.code == 2 and "report of bucket 'another-bucket'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    old = datetime(2026, 1, 1, tzinfo=UTC)
    objects, mkey = report([[Row("k", "v", 0, latest=True)]], source=src, created=old, base="old")
    for key, data in objects.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    r = store.run("copy", f"s3://{src}", f"s3://{dst}", "--inventory", str(root / mkey), "--inventory-max-age", "2d")
    assert r.code == 2 and "older than --inventory-max-age (2d)" in r.stderr and "Traceback" not in r.stderr
    assert store.history(dst) == {}


def test_status_reports_of_failed_and_skipped_versions_parse(seaweed: Store, tmp_path: Path) -> None:
    src, dst = seaweed.buckets()
    c = seaweed.client
    c.put_object(Bucket=src, Key="a", Body=b"a")
    c.put_object(Bucket=src, Key="b", Body=b"b")
    c.delete_object(Bucket=src, Key="b")  # its delete marker will be refused in the replica
    manifest = str(tmp_path / "m.db")
    denied = [Fault("access_denied", 1.0, op="DeleteObject")]
    for attempt in (1,):  # a rerun would start with b: a denial before any copy stops the run (exit 2)
        with ThreadedProxy(seaweed.endpoint, faults=denied) as proxy:
            r = seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--concurrency", "1",
                            "--endpoint-url", proxy.endpoint_url)  # fmt: skip
        assert r.code == 1, r.stderr
        for ext in ("csv", "json"):
            path = tmp_path / f"failed.{ext}"
            st = seaweed.run("status", "--manifest", manifest, "--failed", "--report", str(path))
            assert st.code == 1 and "1 failed versions written to" in st.stderr, st.stderr
            rows = list(csv.DictReader(path.read_text().splitlines())) if ext == "csv" else json.loads(path.read_text())
            assert len(rows) == 1
            row = rows[0]
            assert (row["key"], row["state"], int(row["attempts"])) == ("b", "failed", attempt)
            assert "access denied" in row["reason"].lower() and row["source_version_id"]
            assert datetime.fromisoformat(row["last_error_at"].replace("Z", "+00:00")) <= datetime.now(UTC)
            assert oct(path.stat().st_mode & 0o777) == "0o600"
    skipped = tmp_path / "skipped.json"
    st = seaweed.run("status", "--manifest", manifest, "--skipped", "--report", str(skipped))
    assert json.loads(skipped.read_text()) == []
    bad = seaweed.run("status", "--manifest", manifest, "--report", str(tmp_path / "x.txt"))
    assert bad.code == 2 and "name a .csv or a .json file" in bad.stderr


def test_json_logs_parse_and_carry_an_eta(seaweed: Store, tmp_path: Path) -> None:
    src, dst = seaweed.buckets()
    seed_histories(seaweed, src, 60)
    r = seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", str(tmp_path / "m.db"),
                    "--log-format", "json", "--progress-interval", "0.05", "--concurrency", "2")  # fmt: skip
    assert r.code == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("{")]
    records = [json.loads(ln) for ln in lines]  # every JSON line parses
    progress = [x for x in records if x["event"] == "progress"]
    (summary,) = [x for x in records if x["event"] == "summary"]
    assert progress, r.stderr
    for p in progress:
        assert {"copied", "failed", "versions_per_second", "eta", "pacing"} <= set(p)
        assert {"ceiling", "concurrency_cuts", "concurrency_now", "retries"} <= set(p["pacing"])
        assert set(p["eta"]) == {"total", "total_estimated", "seconds"}
    assert summary["exit_code"] == 0 and summary["this_run"]["copied"] == summary["job"]["versions"]
    assert r.stdout == ""  # the text summary is replaced by the JSON object
    quiet = seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", str(tmp_path / "m.db"), "--quiet",
                        "--progress-interval", "0.05")  # fmt: skip
    assert quiet.code == 0 and quiet.stderr == "", quiet.stderr
