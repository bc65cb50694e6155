"""`backfill verify` against real servers: clean replicas, damaged replicas, multipart objects."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from testbed.store import Store

MiB = 1024 * 1024


def _backfill(store: Store, src: str, dst: str, manifest: str, *extra: str) -> None:
    r = store.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, *extra)
    assert r.code == 0, r.stderr


def _seed(store: Store, src: str) -> None:
    c = store.client
    for i in range(30):
        for v in range(1 + i % 3):
            c.put_object(Bucket=src, Key=f"dir{i % 4}/k{i:03d}", Body=f"k{i} v{v} {'#' * i}".encode())


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("with_manifest", [True, False])
def test_a_clean_backfill_verifies_clean(store: Store, manifest: str, tmp_path: Path, with_manifest: bool) -> None:
    src, dst = store.buckets()
    _seed(store, src)
    if store.name == "seaweedfs":
        store.client.delete_object(Bucket=src, Key="dir0/k000")
    _backfill(store, src, dst, manifest)
    report = tmp_path / "report.csv"
    args = ["verify", f"s3://{src}", f"s3://{dst}", "--report", str(report), "--json"]
    r = store.run(*args, *(["--manifest", manifest] if with_manifest else []))
    assert r.code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["mode"] == ("manifest" if with_manifest else "histories")
    assert s["keys"] == 30
    assert s["identical"] == s["versions"] > 30
    assert sum(s["differences"].values()) == 0
    assert _rows(report) == []


def test_copy_with_verify(seaweed: Store, manifest: str) -> None:
    src, dst = seaweed.buckets()
    _seed(seaweed, src)
    r = seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--verify", "--json")
    assert r.code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["verify"]["mode"] == "manifest" and s["verify"]["identical"] == s["job"]["copied"]


def _damage(store: Store, src: str, dst: str) -> dict[str, str]:
    """Damage the replica in one way per key; returns key → the category verify must name."""
    c = store.client

    def versions(bucket: str, key: str) -> list[str]:
        return [e[3] for e in store.history(bucket)[key]]  # oldest first

    def replace(key: str, body: bytes) -> None:
        for vid in versions(dst, key):
            c.delete_object(Bucket=dst, Key=key, VersionId=vid)
        c.put_object(Bucket=dst, Key=key, Body=body)

    # Same size, other content.
    replace("a/overwritten", b"X" * len(b"original content"))
    # Another size.
    replace("a/resized", b"much longer than it was")
    # A version lost.
    c.delete_object(Bucket=dst, Key="b/two-versions", VersionId=versions(dst, "b/two-versions")[0])
    # An object only the replica has.
    c.put_object(Bucket=dst, Key="b/stray", Body=b"not in the source")
    # Versions in the wrong order.
    for vid in versions(dst, "c/ordered"):
        c.delete_object(Bucket=dst, Key="c/ordered", VersionId=vid)
    c.put_object(Bucket=dst, Key="c/ordered", Body=b"second, longer")
    c.put_object(Bucket=dst, Key="c/ordered", Body=b"first")
    # A delete marker lost.
    marker = next(e for e in store.history(dst)["d/deleted"] if e[0])[3]
    c.delete_object(Bucket=dst, Key="d/deleted", VersionId=marker)
    return {
        "a/overwritten": "content_differs",
        "a/resized": "size_differs",
        "b/two-versions": "missing_in_replica",
        "b/stray": "extra_in_replica",
        "c/ordered": "history_differs",
        "d/deleted": "history_differs",
    }


def test_a_damaged_replica_is_reported_difference_by_difference(seaweed: Store, manifest: str, tmp_path: Path) -> None:
    src, dst = seaweed.buckets()
    c = seaweed.client
    c.put_object(Bucket=src, Key="a/overwritten", Body=b"original content")
    c.put_object(Bucket=src, Key="a/resized", Body=b"short")
    c.put_object(Bucket=src, Key="a/untouched", Body=b"fine")
    c.put_object(Bucket=src, Key="b/two-versions", Body=b"one")
    c.put_object(Bucket=src, Key="b/two-versions", Body=b"two")
    c.put_object(Bucket=src, Key="c/ordered", Body=b"first")
    c.put_object(Bucket=src, Key="c/ordered", Body=b"second, longer")
    c.put_object(Bucket=src, Key="d/deleted", Body=b"gone soon")
    c.delete_object(Bucket=src, Key="d/deleted")
    _backfill(seaweed, src, dst, manifest)
    expected = _damage(seaweed, src, dst)

    report = tmp_path / "report.csv"
    r = seaweed.run("verify", f"s3://{src}", f"s3://{dst}", "--report", str(report), "--json")
    assert r.code == 1, r.stderr
    rows = _rows(report)
    found = {(row["key"], row["category"]) for row in rows}
    for key, category in expected.items():
        assert (key, category) in found, (key, category, rows)
    assert not any(row["key"] == "a/untouched" for row in rows)
    assert any("delete marker missing" in row["detail"] for row in rows if row["key"] == "d/deleted")
    assert any("order" in row["detail"] for row in rows if row["key"] == "c/ordered")
    s = json.loads(r.stdout)
    assert s["differences"]["content_differs"] == 1 and s["differences"]["size_differs"] == 1

    # With the manifest, each recorded pairing is checked: every damaged key is named too.
    report_json = tmp_path / "report.json"
    r = seaweed.run("verify", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--report", str(report_json))
    assert r.code == 1, r.stderr
    rows_json = json.loads(report_json.read_text())
    assert {row["key"] for row in rows_json} == set(expected)
    assert not any(row["key"] == "a/untouched" for row in rows_json)


def _multipart(store: Store, bucket: str, key: str) -> None:
    c = store.client
    up = c.create_multipart_upload(Bucket=bucket, Key=key)
    parts = []
    for n, size in enumerate([5 * MiB, 1 * MiB], start=1):
        r = c.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=os.urandom(size))
        parts.append({"ETag": r["ETag"], "PartNumber": n})
    c.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": parts})


def test_multipart_objects_are_exact_on_moto(moto: Store, manifest: str) -> None:
    src, dst = moto.buckets()
    _multipart(moto, src, "big/object")
    _backfill(moto, src, dst, manifest, "--multipart-threshold", "5MiB")
    r = moto.run("verify", f"s3://{src}", f"s3://{dst}", "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["identical_by"] == {"etag": 1}


def test_multipart_objects_on_seaweedfs_are_settled_by_content_not_misreported(
    seaweed: Store, manifest: str, tmp_path: Path
) -> None:
    src, dst = seaweed.buckets()
    _multipart(seaweed, src, "big/object")
    _backfill(seaweed, src, dst, manifest, "--multipart-threshold", "5MiB")
    # The same bytes in another part layout (a copy asking for a checksum reproduces the source's layout and,
    # on SeaweedFS too, its ETag: docs/testbed-facts.md), as a copy with --part-size makes of a source
    # whose layout cannot be reproduced.
    c = seaweed.client
    data = c.get_object(Bucket=src, Key="big/object")["Body"].read()
    c.delete_object(Bucket=dst, Key="big/object", VersionId=seaweed.history(dst)["big/object"][0][3])
    up = c.create_multipart_upload(Bucket=dst, Key="big/object")
    parts, cut = [], 5 * MiB + 512 * 1024
    for n, chunk in enumerate([data[:cut], data[cut:]], start=1):
        r = c.upload_part(Bucket=dst, Key="big/object", UploadId=up["UploadId"], PartNumber=n, Body=chunk)
        parts.append({"ETag": r["ETag"], "PartNumber": n})
    c.complete_multipart_upload(Bucket=dst, Key="big/object", UploadId=up["UploadId"], MultipartUpload={"Parts": parts})
    assert seaweed.history(src)["big/object"][0][2] != seaweed.history(dst)["big/object"][0][2]
    report = tmp_path / "r.csv"
    r = seaweed.run("verify", f"s3://{src}", f"s3://{dst}", "--json", "--report", str(report))
    assert r.code == 1, r.stderr  # cannot be proven equal without content: unverifiable, not "differs"
    s = json.loads(r.stdout)
    assert s["differences"]["unverifiable"] == 1 and s["differences"]["content_differs"] == 0
    assert "--deep" in _rows(report)[0]["detail"]
    r = seaweed.run("verify", f"s3://{src}", f"s3://{dst}", "--json", "--deep")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["identical_by"] == {"content compared": 1}

    # --deep also catches a replica whose parts were swapped for other bytes of the same size.
    vid = seaweed.history(dst)["big/object"][0][3]
    seaweed.client.delete_object(Bucket=dst, Key="big/object", VersionId=vid)
    _multipart(seaweed, dst, "big/object")
    r = seaweed.run("verify", f"s3://{src}", f"s3://{dst}", "--json", "--deep")
    assert r.code == 1
    assert json.loads(r.stdout)["differences"]["content_differs"] == 1


def test_verify_refuses_the_manifest_of_another_job(seaweed: Store, manifest: str) -> None:
    src, dst = seaweed.buckets()
    _seed(seaweed, src)
    _backfill(seaweed, src, dst, manifest)
    _, other = seaweed.buckets()
    r = seaweed.run("verify", f"s3://{src}", f"s3://{other}", "--manifest", manifest)
    assert r.code == 2 and "records a backfill of" in r.stderr and "Traceback" not in r.stderr


def test_verify_latest_only(seaweed: Store, manifest: str) -> None:
    src, dst = seaweed.buckets(dest_versioned=False)
    _seed(seaweed, src)
    _backfill(seaweed, src, dst, manifest, "--versions", "latest", "--allow-unversioned")
    r = seaweed.run("verify", f"s3://{src}", f"s3://{dst}", "--versions", "latest", "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["identical"] == 30
    r = seaweed.run("verify", f"s3://{src}", f"s3://{dst}", "--json")
    assert r.code == 1  # the full histories were not copied
    assert json.loads(r.stdout)["differences"]["missing_in_replica"] > 0
