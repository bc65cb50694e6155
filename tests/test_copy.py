"""`backfill copy` against real servers: histories, dry runs, manifests, exit codes."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from testbed.seeds import seed_histories
from testbed.store import Run, Store, shape


def test_every_version_and_delete_marker_in_order(store: Store, manifest: str) -> None:
    src, dst = store.buckets()
    counts = seed_histories(store, src, 120)
    extra = 0
    if store.name != "moto":
        # A key whose history starts with a delete marker (its first version was removed for good).
        c = store.client
        first = c.put_object(Bucket=src, Key="alpha/only-marker-left", Body=b"gone")
        c.delete_object(Bucket=src, Key="alpha/only-marker-left")
        c.delete_object(Bucket=src, Key="alpha/only-marker-left", VersionId=first["VersionId"])
        extra = 1
    r = store.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json")
    assert r.code == 0, r.stderr
    assert "Traceback" not in r.stderr
    summary = json.loads(r.stdout)
    total = counts["versions"] + counts["delete_markers"] + extra
    assert summary["job"]["copied"] == total
    assert summary["this_run"]["delete_markers"] == counts["delete_markers"] + extra
    assert shape(store.history(src)) == shape(store.history(dst))

    # Running it again copies nothing and changes nothing.
    before = store.history(dst)
    r = store.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["this_run"]["copied"] == 0
    assert store.history(dst) == before


def test_replica_version_ids_recorded(seaweed: Store, manifest: str) -> None:
    src, dst = seaweed.buckets()
    seed_histories(seaweed, src, 20)
    assert seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest).code == 0
    replica = {vid for entries in seaweed.history(dst).values() for *_, vid in entries}
    source = {(k, e[3]) for k, entries in seaweed.history(src).items() for e in entries}
    with sqlite3.connect(manifest) as db:
        rows = db.execute("SELECT key, vid, rvid, state FROM version").fetchall()
    assert {(k, v) for k, v, _, _ in rows} == source
    assert {rv for _, _, rv, _ in rows} == replica
    assert {s for *_, s in rows} == {1}


def test_dry_run_writes_nothing(seaweed: Store, tmp_path: Path) -> None:
    src, dst = seaweed.buckets()
    counts = seed_histories(seaweed, src, 30)
    manifest = tmp_path / "dry.db"
    r = seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", str(manifest), "--dry-run", "--json")
    assert r.code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["dry_run"] is True
    assert s["this_run"]["listed"] == counts["versions"] + counts["delete_markers"]
    assert s["this_run"]["delete_markers"] == counts["delete_markers"]
    assert s["this_run"]["listed_bytes"] > 0
    assert not manifest.exists()
    assert list(tmp_path.iterdir()) == []
    assert seaweed.history(dst) == {}


def test_manifest_of_another_job_is_refused(seaweed: Store, manifest: str) -> None:
    src, dst = seaweed.buckets()
    seaweed.client.put_object(Bucket=src, Key="a.txt", Body=b"a")
    assert seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest).code == 0
    _, other = seaweed.buckets()
    r = seaweed.run("copy", f"s3://{src}", f"s3://{other}", "--manifest", manifest)
    assert r.code == 2
    assert "belongs to another job" in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2  # the manifest line, then one error line
    assert seaweed.history(other) == {}

    not_a_manifest = Path(manifest).with_name("notes.db")
    not_a_manifest.write_text("hello")
    r = seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", str(not_a_manifest))
    assert r.code == 2 and "not a backfill manifest" in r.stderr and "Traceback" not in r.stderr


def test_manifest_is_private_and_holds_no_secrets(seaweed: Store, manifest: str) -> None:
    src, dst = seaweed.buckets()
    seed_histories(seaweed, src, 10)
    assert seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest).code == 0
    for path in Path(manifest).parent.glob("job.db*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        data = path.read_bytes()
        assert seaweed.env["AWS_SECRET_ACCESS_KEY"].encode() not in data
        assert seaweed.env["AWS_ACCESS_KEY_ID"].encode() not in data


def _one_error_line(r: Run) -> str:
    assert r.code == 2, (r.code, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if not line.startswith("manifest:")]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("backfill: error: ")
    return lines[0]


def test_exit_2_for_user_and_cloud_errors(seaweed: Store, manifest: str, tmp_path: Path) -> None:
    src, dst = seaweed.buckets()
    seaweed.client.put_object(Bucket=src, Key="a", Body=b"a")
    line = _one_error_line(seaweed.run("copy", "s3://no-such-bucket-here", f"s3://{dst}", "--manifest", manifest))
    assert "no-such-bucket-here" in line and "does not exist" in line
    assert "not an S3 URL" in _one_error_line(seaweed.run("copy", "/tmp/x", f"s3://{dst}"))
    assert "--concurrency" in _one_error_line(
        seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--concurrency", "0", "--manifest", manifest)
    )
    # A replica without versioning cannot hold a history.
    _, flat = seaweed.buckets(dest_versioned=False)
    line = _one_error_line(seaweed.run("copy", f"s3://{src}", f"s3://{flat}", "--manifest", manifest))
    assert "versioning" in line and "--versions latest" in line
    # Unknown profile.
    line = _one_error_line(
        seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--source-profile", "nope", "--manifest", manifest)
    )
    assert "nope" in line
    # No credentials at all.
    empty = tmp_path / "empty"
    empty.write_text("")
    r = seaweed.run(
        "copy",
        f"s3://{src}",
        f"s3://{dst}",
        "--manifest",
        manifest,
        env={
            "AWS_ACCESS_KEY_ID": "",
            "AWS_SECRET_ACCESS_KEY": "",
            "AWS_CONFIG_FILE": str(empty),
            "AWS_SHARED_CREDENTIALS_FILE": str(empty),
            "AWS_EC2_METADATA_DISABLED": "true",
        },
    )
    assert "credentials" in _one_error_line(r)


def test_exit_2_when_the_replica_denies_every_copy(seaweed: Store, manifest: str) -> None:
    src, dst = seaweed.buckets()
    seed_histories(seaweed, src, 5)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{dst}/*"}
        ],
    }
    seaweed.client.put_bucket_policy(Bucket=dst, Policy=json.dumps(policy))
    line = _one_error_line(seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest))
    assert "access denied" in line
    # Nothing was recorded as copied; the versions wait, pending, for a run with the grant.
    with sqlite3.connect(manifest) as db:
        assert db.execute("SELECT count(*) FROM version WHERE state = 1").fetchone()[0] == 0
    seaweed.client.delete_bucket_policy(Bucket=dst)
    r = seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest)
    assert r.code == 0, r.stderr
    assert shape(seaweed.history(src)) == shape(seaweed.history(dst))


def test_exit_1_when_some_versions_fail_then_retry(seaweed: Store, manifest: str) -> None:
    src, dst = seaweed.buckets()
    c = seaweed.client
    for i in range(10):
        c.put_object(Bucket=src, Key=f"allowed/{i}", Body=b"ok")
    for v in range(3):
        c.put_object(Bucket=src, Key="zz-denied/k", Body=f"v{v}".encode())
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{dst}/zz-denied/*",
            }
        ],
    }
    c.put_bucket_policy(Bucket=dst, Policy=json.dumps(policy))
    # One shard, one worker: the allowed keys (sorted first) succeed before the denial.
    args = ["copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--shards", "1", "--concurrency", "1"]
    r = seaweed.run(*args, "--json")
    assert r.code == 1, r.stderr
    s = json.loads(r.stdout)
    assert s["job"]["copied"] == 10 and s["job"]["failed"] == 3
    assert "Traceback" not in r.stderr
    st = seaweed.run("status", "--manifest", manifest, "--json")
    assert st.code == 1
    status = json.loads(st.stdout)
    assert status["versions"]["failed"]["count"] == 3
    assert {e["key"] for e in status["examples"]} == {"zz-denied/k"}
    assert any("earlier version" in e["why"] for e in status["examples"])  # later versions wait in order
    assert "zz-denied/k" not in seaweed.history(dst)

    c.delete_bucket_policy(Bucket=dst)
    r = seaweed.run(*args)
    assert r.code == 0, r.stderr
    assert shape(seaweed.history(src)) == shape(seaweed.history(dst))
    assert seaweed.run("status", "--manifest", manifest).code == 0


def test_profiles_select_credentials(seaweed: Store, manifest: str, tmp_path: Path) -> None:
    src, dst = seaweed.buckets()
    seed_histories(seaweed, src, 5)
    config = tmp_path / "config"
    creds = tmp_path / "credentials"
    config.write_text("[profile master]\nregion = us-east-1\n[profile backup]\nregion = us-east-1\n")
    key, secret = seaweed.env["AWS_ACCESS_KEY_ID"], seaweed.env["AWS_SECRET_ACCESS_KEY"]
    creds.write_text(
        f"[master]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
        f"[backup]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
    )
    env = {
        "AWS_ENDPOINT_URL": seaweed.endpoint,
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(creds),
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
    }
    r = seaweed.run(
        "copy",
        f"s3://{src}",
        f"s3://{dst}",
        "--source-profile",
        "master",
        "--dest-profile",
        "backup",
        "--manifest",
        manifest,
        env=env,
    )
    assert r.code == 0, r.stderr
    assert shape(seaweed.history(src)) == shape(seaweed.history(dst))


def test_default_manifest_name_is_printed(seaweed: Store, tmp_path: Path) -> None:
    src, dst = seaweed.buckets()
    seaweed.client.put_object(Bucket=src, Key="k", Body=b"k")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = seaweed.run("copy", f"s3://{src}", f"s3://{dst}/backup")
        assert r.code == 0, r.stderr
        expected = f"backfill-{src}-to-{dst}_backup.db"
        assert f"manifest: {expected}" in r.stderr
        assert (tmp_path / expected).exists()
        assert seaweed.run("status").code == 0  # finds the only manifest here
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("size", ["8", "5GiB", "1.5MiB"])
def test_sizes_parse(size: str) -> None:
    from backfill.config import parse_size

    assert parse_size(size) == {"8": 8, "5GiB": 5 * 1024**3, "1.5MiB": int(1.5 * 1024**2)}[size]


def test_unversioned_source_copies_its_null_versions(store: Store, manifest: str) -> None:
    src, dst = store.buckets(versioned=False)
    for i in range(5):
        store.client.put_object(Bucket=src, Key=f"plain/{i}", Body=f"{i}".encode())
    r = store.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest)
    assert r.code == 0, r.stderr
    assert shape(store.history(src)) == shape(store.history(dst))


def test_archived_versions_are_skipped_and_reported(moto: Store, manifest: str) -> None:
    src, dst = moto.buckets()
    moto.client.put_object(Bucket=src, Key="cold/archived", Body=b"frozen", StorageClass="GLACIER")
    moto.client.put_object(Bucket=src, Key="hot/object", Body=b"warm")
    r = moto.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json")
    assert r.code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["job"]["copied"] == 1 and s["job"]["skipped"] == 1
    assert any("archived (GLACIER)" in reason for reason in s["problems"])
    assert set(moto.history(dst)) == {"hot/object"}
    st = json.loads(moto.run("status", "--manifest", manifest, "--json").stdout)
    assert st["examples"][0]["key"] == "cold/archived" and st["examples"][0]["state"] == "skipped"


def test_a_history_longer_than_a_listing_page(seaweed: Store, manifest: str) -> None:
    """The first page of a shard holds 100 entries: 250 versions of one key straddle three pages."""
    src, dst = seaweed.buckets()
    c = seaweed.client
    c.put_object(Bucket=src, Key="a-before", Body=b"b")
    for v in range(250):
        c.put_object(Bucket=src, Key="many", Body=f"version {v}".encode())
        if v % 50 == 49:
            c.delete_object(Bucket=src, Key="many")
    c.put_object(Bucket=src, Key="z-after", Body=b"a")
    r = seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["job"]["copied"] == 250 + 5 + 2
    assert shape(seaweed.history(src)) == shape(seaweed.history(dst))
