"""The catalogue of bad inputs: each is refused with one line (what is wrong, what to do), exit 2,
no traceback, and nothing written to the replica. And the awkward data that must simply work.

Permissions are SeaweedFS identities with scoped actions (testbed.servers.IDENTITIES), used through
AWS profiles; a full disk and a read-only directory are small tmpfs mounts (root only: the
tests that need one are skipped with the reason when it cannot be mounted).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backfill.cli import app
from backfill.schema import SCHEMA_VERSION
from testbed.servers import IDENTITIES
from testbed.store import Run, Store, copied_versions, shape, start_cli

# --- helpers -----------------------------------------------------------------


def refused(store: Store, r: Run, dst: str | None = None) -> str:
    """The one error line of a refused run; the replica (when given) untouched."""
    assert r.code == 2, (r.code, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if not line.startswith("manifest:")]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("backfill: error: "), lines[0]
    print(lines[0])  # (shown with pytest -s: the catalogue's messages)
    assert r.stdout == ""
    if dst is not None:
        assert store.history(dst) == {}, "something was written to the replica"
        assert not store.client.list_multipart_uploads(Bucket=dst).get("Uploads")
    return lines[0]


def invoke(store: Store, *args: str) -> Run:
    """The CLI in this process, for inputs refused before any request (saves a second per case)."""
    r = CliRunner().invoke(app, list(args), env=store.env)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return Run(r.exit_code, r.stdout, r.stderr)


def copy(store: Store, src: str, dst: str, manifest: str, *extra: str, env: dict[str, str] | None = None) -> Run:
    return store.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, *extra, env=env)


def seeded(store: Store, keys: int = 3) -> tuple[str, str]:
    src, dst = store.buckets()
    for i in range(keys):
        store.client.put_object(Bucket=src, Key=f"k{i}", Body=f"v{i}".encode())
    return src, dst


def profiles(store: Store, tmp_path: Path, **extra: tuple[str, str]) -> dict[str, str]:
    """An AWS config with a profile per test identity (plus `extra`: name → key pair); the environment
    that uses it, with no default credentials."""
    pairs = {"admin": (store.env["AWS_ACCESS_KEY_ID"], store.env["AWS_SECRET_ACCESS_KEY"])}
    pairs |= {name: (name, f"{name}-secret") for name in IDENTITIES}
    pairs |= extra
    config, creds = tmp_path / "aws-config", tmp_path / "aws-credentials"
    config.write_text("".join(f"[profile {n}]\nregion = us-east-1\n" for n in pairs))
    creds.write_text(
        "".join(f"[{n}]\naws_access_key_id = {k}\naws_secret_access_key = {s}\n" for n, (k, s) in pairs.items())
    )
    return {
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(creds),
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
    }


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs at `path` (root only): skips the test with the reason when it cannot be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` until it has no space left; the filler file."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(chunk)
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 512)
    return filler


# --- credentials and permissions -------------------------------------------------


def test_no_credentials(seaweed: Store, manifest: str, tmp_path: Path) -> None:
    src, dst = seeded(seaweed)
    empty = tmp_path / "empty"
    empty.write_text("")
    env = {
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    line = refused(seaweed, copy(seaweed, src, dst, manifest, env=env), dst)
    assert "no AWS credentials found" in line and "--source-profile" in line


def test_unknown_access_key(seaweed: Store, manifest: str, tmp_path: Path) -> None:
    src, dst = seeded(seaweed)
    env = profiles(seaweed, tmp_path, stranger=("AKIDNOBODYKNOWS", "whatever-secret"))
    r = copy(seaweed, src, dst, manifest, "--source-profile", "stranger", "--dest-profile", "admin", env=env)
    line = refused(seaweed, r, dst)
    assert "access key of profile stranger is not known" in line and "InvalidAccessKeyId" in line


def test_wrong_secret_key(seaweed: Store, manifest: str, tmp_path: Path) -> None:
    src, dst = seeded(seaweed)
    env = profiles(seaweed, tmp_path, typo=(seaweed.env["AWS_ACCESS_KEY_ID"], "not-the-secret"))
    r = copy(seaweed, src, dst, manifest, "--source-profile", "admin", "--dest-profile", "typo", env=env)
    line = refused(seaweed, r, dst)
    assert "secret key of profile typo does not match" in line and "SignatureDoesNotMatch" in line


def test_unknown_profile(seaweed: Store, manifest: str, tmp_path: Path) -> None:
    src, dst = seeded(seaweed)
    env = profiles(seaweed, tmp_path)
    r = copy(seaweed, src, dst, manifest, "--source-profile", "admin", "--dest-profile", "nope", env=env)
    line = refused(seaweed, r, dst)
    assert "nope" in line and "could not be found" in line and "~/.aws/config" in line


def test_access_denied_on_list(seaweed: Store, manifest: str, tmp_path: Path) -> None:
    src, dst = seeded(seaweed)
    env = profiles(seaweed, tmp_path)
    r = copy(seaweed, src, dst, manifest, "--source-profile", "no-list", "--dest-profile", "admin", env=env)
    line = refused(seaweed, r, dst)
    assert "access denied with profile no-list on ListObjectVersions" in line and "s3:ListBucketVersions" in line


def test_access_denied_on_read(seaweed: Store, manifest: str, tmp_path: Path) -> None:
    """The replica's principal sends the copies, so it must be able to read the source: here it cannot."""
    src, dst = seeded(seaweed, keys=20)
    env = profiles(seaweed, tmp_path)
    r = copy(seaweed, src, dst, manifest, "--source-profile", "admin", "--dest-profile", "replica-only", env=env)
    line = refused(seaweed, r, dst)
    assert "access denied with profile replica-only on CopyObject" in line and "s3:GetObjectVersion" in line
    with sqlite3.connect(manifest) as db:  # nothing recorded as copied: all of it waits for a run with the grant
        assert db.execute("SELECT count(*) FROM version WHERE state != 0").fetchone()[0] == 0


def test_access_denied_on_write(seaweed: Store, manifest: str, tmp_path: Path) -> None:
    src, dst = seeded(seaweed, keys=20)
    env = profiles(seaweed, tmp_path)
    r = copy(seaweed, src, dst, manifest, "--source-profile", "admin", "--dest-profile", "no-write", env=env)
    line = refused(seaweed, r, dst)
    assert "access denied with profile no-write on CopyObject" in line and "s3:PutObject on the replica" in line


# --- buckets and URLs ----------------------------------------------------------------


def test_nonexistent_source_bucket(seaweed: Store, manifest: str) -> None:
    _, dst = seeded(seaweed)
    line = refused(seaweed, copy(seaweed, "no-such-source-bucket", dst, manifest), dst)
    assert "source bucket s3://no-such-source-bucket does not exist" in line


def test_nonexistent_replica_bucket(seaweed: Store, manifest: str) -> None:
    src, _ = seeded(seaweed)
    line = refused(seaweed, copy(seaweed, src, "no-such-replica-bucket", manifest))
    assert "replica bucket s3://no-such-replica-bucket does not exist" in line
    assert not Path(manifest).exists()


@pytest.mark.parametrize(("source", "dest"), [("a", "a/x"), ("a/", "a/x/"), ("", "backup/"), ("a/x", "a")])
def test_overlapping_prefixes_in_one_bucket(seaweed: Store, manifest: str, source: str, dest: str) -> None:
    src, _ = seeded(seaweed)
    before = seaweed.history(src)
    r = invoke(seaweed, "copy", f"s3://{src}/{source}", f"s3://{src}/{dest}", "--manifest", manifest)
    line = refused(seaweed, r)
    assert "overlap" in line and "copy its own copies" in line
    assert seaweed.history(src) == before
    assert not Path(manifest).exists()


def test_disjoint_prefixes_in_one_bucket_work(seaweed: Store, manifest: str) -> None:
    src, _ = seaweed.buckets()
    for key in ("a/1", "a/2", "ab/3"):
        seaweed.client.put_object(Bucket=src, Key=key, Body=key.encode())
    r = seaweed.run("copy", f"s3://{src}/a/", f"s3://{src}/b/", "--manifest", manifest)
    assert r.code == 0, r.stderr
    h = shape(seaweed.history(src))
    assert {k: v for k, v in h.items() if k.startswith("b/")} == {"b/1": h["a/1"], "b/2": h["a/2"]}


def test_replica_without_versioning_is_refused_for_a_history(seaweed: Store, manifest: str) -> None:
    src, dst = seaweed.buckets(dest_versioned=False)
    seaweed.client.put_object(Bucket=src, Key="k", Body=b"v")
    # --versions all needs a versioned replica, whatever the flag; a dry run says so as a run would
    for extra in ((), ("--allow-unversioned",), ("--dry-run",)):
        line = refused(seaweed, copy(seaweed, src, dst, manifest, *extra), dst)
        assert "versioning off" in line and "cannot hold the source's history" in line
        assert "--versions latest --allow-unversioned" in line


def test_replica_without_versioning_needs_the_flag_for_latest(seaweed: Store, manifest: str) -> None:
    src, dst = seaweed.buckets(dest_versioned=False)
    seaweed.client.put_object(Bucket=src, Key="k", Body=b"v1")
    seaweed.client.put_object(Bucket=src, Key="k", Body=b"v2")
    line = refused(seaweed, copy(seaweed, src, dst, manifest, "--versions", "latest"), dst)
    assert "versioning off" in line and "--allow-unversioned" in line
    r = copy(seaweed, src, dst, manifest, "--versions", "latest", "--allow-unversioned")
    assert r.code == 0, r.stderr
    assert seaweed.client.get_object(Bucket=dst, Key="k")["Body"].read() == b"v2"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("/tmp/backup", "is not an S3 URL"),
        ("s3:/bucket", "is not an S3 URL"),
        ("https://bucket.s3.amazonaws.com/x", "is not an S3 URL"),
        ("s3://", "is not a valid bucket name"),
        ("s3://Bad_Bucket!/x", "is not a valid bucket name"),
    ],
)
def test_invalid_s3_url(seaweed: Store, manifest: str, url: str, words: str) -> None:
    src, dst = seeded(seaweed)
    line = refused(seaweed, invoke(seaweed, "copy", f"s3://{src}", url, "--manifest", manifest), dst)
    assert words in line


@pytest.mark.parametrize(
    ("option", "glob", "words"),
    [
        ("--include", "logs/[2024*", "never closed"),
        ("--exclude", "", "needs a pattern"),
        ("--include", "s3://bucket/logs/*", "relative to the source prefix"),
    ],
)
def test_invalid_glob(seaweed: Store, manifest: str, option: str, glob: str, words: str) -> None:
    src, dst = seeded(seaweed)
    r = invoke(seaweed, "copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, option, glob)
    line = refused(seaweed, r, dst)
    assert option in line and words in line
    assert not Path(manifest).exists()


@pytest.mark.parametrize("when", ["yesterday", "2026-13-45", "2026-01-01T25:00"])
def test_invalid_date(seaweed: Store, manifest: str, when: str) -> None:
    src, dst = seeded(seaweed)
    r = invoke(seaweed, "copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--modified-before", when)
    line = refused(seaweed, r, dst)
    assert f"cannot read time {when!r}" in line and "ISO-8601" in line


@pytest.mark.parametrize("option", ["--expected-source-owner", "--expected-dest-owner"])
def test_invalid_account_id(seaweed: Store, manifest: str, option: str) -> None:
    src, dst = seeded(seaweed)
    r = invoke(seaweed, "copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, option, "my-account")
    line = refused(seaweed, r, dst)
    assert option in line and "12 digits" in line


# --- the manifest --------------------------------------------------------------------


def test_corrupt_manifest(seaweed: Store, manifest: str) -> None:
    """A manifest damaged on disk is refused before anything is copied, and left as it is."""
    src, dst = seaweed.buckets()
    for i in range(200):
        seaweed.client.put_object(Bucket=src, Key=f"d{i % 3}/key-{i:04d}-{'x' * 60}", Body=b"v")
    assert copy(seaweed, src, dst, manifest).code == 0
    size = Path(manifest).stat().st_size
    assert size >= 8 * 4096 and not Path(f"{manifest}-wal").exists()
    with open(manifest, "r+b") as f:  # every page but the first (the header and the schema): tables, indexes
        f.seek(4096)  # (two pages in the middle may be free pages, whose damage no check can see)
        f.write(os.urandom(size - 4096))
    damaged = Path(manifest).read_bytes()
    seaweed.client.put_object(Bucket=src, Key="d0/new", Body=b"new")
    before = seaweed.history(dst)
    line = refused(seaweed, copy(seaweed, src, dst, manifest))
    assert "is damaged" in line and "restore a copy" in line
    assert seaweed.history(dst) == before
    assert Path(manifest).read_bytes() == damaged


def test_not_a_manifest(seaweed: Store, tmp_path: Path) -> None:
    src, dst = seeded(seaweed)
    notes = tmp_path / "notes.db"
    notes.write_text("my notes, not a database\n" * 100)
    line = refused(seaweed, copy(seaweed, src, dst, str(notes)), dst)
    assert "is not a backfill manifest" in line and "pass another --manifest" in line
    assert notes.read_text().startswith("my notes")


def test_manifest_of_another_job(seaweed: Store, manifest: str) -> None:
    src, dst = seeded(seaweed)
    assert copy(seaweed, src, dst, manifest).code == 0
    _, other = seaweed.buckets()
    line = refused(seaweed, copy(seaweed, src, other, manifest), other)
    assert "belongs to another job" in line and f"s3://{other}" in line and "pass a different --manifest" in line


def test_manifest_of_a_newer_backfill(seaweed: Store, manifest: str) -> None:
    src, dst = seeded(seaweed)
    assert copy(seaweed, src, dst, manifest, "--versions", "latest").code == 0
    with sqlite3.connect(manifest) as db:
        db.execute("PRAGMA user_version = 99")
    _, other = seaweed.buckets()
    line = refused(seaweed, copy(seaweed, src, other, manifest), other)
    assert "schema 99" in line and "use the backfill version that wrote it" in line


def test_a_manifest_of_schema_1_is_upgraded(seaweed: Store, manifest: str) -> None:
    """A manifest written before multipart uploads were recorded (schema 1) is resumed, and upgraded."""
    src, dst = seeded(seaweed, keys=10)
    assert copy(seaweed, src, dst, manifest).code == 0
    with sqlite3.connect(manifest) as db:
        db.execute("DROP TABLE upload")
        db.execute("UPDATE version SET state = 0, rvid = NULL WHERE key IN ('k1', 'k2')")  # as if interrupted
        db.execute("PRAGMA user_version = 1")
    r = copy(seaweed, src, dst, manifest, "--json", "--settle-seconds", "0")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["this_run"]["recovered_after_crash"] == 2
    with sqlite3.connect(manifest) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION  # the current schema (was 2)
        assert db.execute("SELECT count(*) FROM upload").fetchone()[0] == 0
    assert shape(seaweed.history(src)) == shape(seaweed.history(dst))


def test_manifest_directory_not_writable(seaweed: Store, tmp_path: Path) -> None:
    src, dst = seeded(seaweed)
    if os.geteuid() == 0:  # root writes through permission bits: a read-only file system it is
        ctx: contextlib.AbstractContextManager[Path] = tmpfs(tmp_path / "ro", "1m", read_only=True)
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        ctx = contextlib.nullcontext(ro)
    with ctx as directory:
        line = refused(seaweed, copy(seaweed, src, dst, str(directory / "job.db")), dst)
    assert "cannot create the manifest" in line and "pass --manifest in a writable directory" in line


def test_manifest_on_a_file_system_turned_read_only(seaweed: Store, tmp_path: Path) -> None:
    src, dst = seeded(seaweed)
    with tmpfs(tmp_path / "fs", "4m") as directory:
        m = str(directory / "job.db")
        assert copy(seaweed, src, dst, m).code == 0
        subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)
        seaweed.client.put_object(Bucket=src, Key="k-new", Body=b"n")
        line = refused(seaweed, copy(seaweed, src, dst, m))
    assert "cannot write the manifest" in line and "writable directory" in line
    assert "k-new" not in seaweed.history(dst)


def test_report_that_cannot_be_written(seaweed: Store, tmp_path: Path) -> None:
    src, dst = seeded(seaweed)
    report = tmp_path / "no-such-directory" / "diff.csv"
    line = refused(seaweed, seaweed.run("verify", f"s3://{src}", f"s3://{dst}", "--report", str(report)), dst)
    assert f"cannot write the report {report}" in line and "pass --report in a writable directory" in line


def test_disk_full_when_the_manifest_is_created(seaweed: Store, tmp_path: Path) -> None:
    src, dst = seeded(seaweed)
    with tmpfs(tmp_path / "full", "256k") as directory:
        fill(directory)
        line = refused(seaweed, copy(seaweed, src, dst, str(directory / "job.db")), dst)
    assert line == (
        f"backfill: error: the manifest's disk is full ({directory / 'job.db'}): "
        "free space or pass --manifest on another disk; rerun to resume"
    )


def test_disk_full_in_mid_run_stops_cleanly_and_resumes(seaweed: Store, tmp_path: Path) -> None:
    """SQLite says "database or disk is full" in the checkpoint writer's thread: one line, exit 2, and the
    manifest stays sound, so that the same command finishes the job once there is space."""
    src, dst = seaweed.buckets()
    c = seaweed.client
    for i in range(200):
        c.put_object(Bucket=src, Key=f"d{i % 4}/k{i:04d}", Body=f"{i}".encode())
    with tmpfs(tmp_path / "small", "8m") as directory:
        m = str(directory / "job.db")
        args = ["copy", f"s3://{src}", f"s3://{dst}", "--manifest", m, "--settle-seconds", "1", "--max-rps", "40"]
        p = start_cli(seaweed, *args)
        try:
            deadline = time.monotonic() + 60
            while copied_versions(m) < 20:
                assert p.poll() is None and time.monotonic() < deadline, "the run ended before the disk filled"
                time.sleep(0.05)
            filler = fill(directory)
            _, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
        assert p.returncode == 2, err
        assert "Traceback" not in err, err
        lines = [line for line in err.strip().splitlines() if line.startswith("backfill: error:")]
        assert lines == [
            f"backfill: error: the manifest's disk is full ({m}): "
            "free space or pass --manifest on another disk; rerun to resume"
        ], err
        filler.unlink()
        with sqlite3.connect(m) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        r = seaweed.run(*args[:-2], "--json")  # the same job, at full speed
        assert r.code == 0, r.stderr
        assert json.loads(r.stdout)["job"]["copied"] == 200
    assert shape(seaweed.history(src)) == shape(seaweed.history(dst))


# --- open files -----------------------------------------------------------------------


def _copy_with_open_files(store: Store, soft: int, hard: int, *args: str) -> Run:
    """`backfill copy` in a process whose limit on open files is (soft, hard), as a shell's ulimit sets it."""
    start = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
        "sys.argv = ['backfill', *sys.argv[1:]]; runpy.run_module('backfill', run_name='__main__')"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    p = subprocess.run(
        [sys.executable, "-c", start, "copy", *args],
        env={**base, **store.env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Run(p.returncode, p.stdout, p.stderr)


def test_a_low_soft_limit_on_open_files_is_raised(seaweed: Store, manifest: str) -> None:
    """macOS starts shells with 256 open files, fewer than a default run's connections: the run makes room."""
    src, dst = seeded(seaweed, 20)
    r = _copy_with_open_files(seaweed, 256, 4096, f"s3://{src}", f"s3://{dst}", "--manifest", manifest)
    assert r.code == 0, r.stderr
    assert len(seaweed.history(dst)) == 20


def test_a_hard_limit_on_open_files_below_the_concurrency_is_refused(seaweed: Store, manifest: str) -> None:
    src, dst = seeded(seaweed)
    r = _copy_with_open_files(seaweed, 200, 200, f"s3://{src}", f"s3://{dst}", "--manifest", manifest)
    line = refused(seaweed, r, dst)
    assert "open files" in line and "--concurrency" in line and "ulimit -n" in line
    r = _copy_with_open_files(
        seaweed, 200, 200, f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--concurrency", "64"
    )
    assert r.code == 0, r.stderr


# --- endpoints and regions ------------------------------------------------------------


def test_endpoint_unreachable(seaweed: Store, manifest: str) -> None:
    src, dst = seeded(seaweed)
    r = copy(seaweed, src, dst, manifest, "--source-endpoint-url", "http://127.0.0.1:9")
    line = refused(seaweed, r, dst)
    assert "cannot use the source bucket" in line and "127.0.0.1:9" in line and "--endpoint-url" in line


@pytest.mark.parametrize("endpoint", ["localhost:9000", "ftp://s3.example.com", "http://[::1"])
def test_endpoint_malformed(seaweed: Store, manifest: str, endpoint: str) -> None:
    src, dst = seeded(seaweed)
    r = invoke(seaweed, "copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--endpoint-url", endpoint)
    line = refused(seaweed, r, dst)
    assert f"endpoint {endpoint!r} is not an http(s) URL" in line


def test_region_mismatch(moto: Store, manifest: str) -> None:
    src, dst = moto.buckets()
    far = f"far-{src}"
    moto.client.create_bucket(Bucket=far, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    moto.client.put_bucket_versioning(Bucket=far, VersioningConfiguration={"Status": "Enabled"})
    moto.client.put_object(Bucket=far, Key="k", Body=b"v")
    line = refused(moto, copy(moto, far, dst, manifest, "--source-region", "us-east-1"), dst)
    assert "eu-west-1" in line and "--source-region" in line
    r = copy(moto, far, dst, manifest)  # without the option, the region is found
    assert r.code == 0, r.stderr


# --- data that must work ----------------------------------------------------------------

KEY_CLASSES = {
    "spaces": ["with space/a b  c.txt", " leading and trailing "],
    "plus": ["plus+sign+key.txt", "+"],
    "percent": ["percent%25encoded.txt", "bare%percent", "%"],
    "query and fragment": ["query?x=1&y=2#frag.txt", "?", "#"],
    "unicode": ["ünïcødé/日本語.txt", "emoji/🎉🚀.txt", "rtl/שלום"],
    "xml specials": ["xml/<tag>&amp;'\".txt"],
    "control characters": ["tab\there", "new\nline", "cr\rkey", "del\x7f", "c1\x85\x9f"],
    "1024-byte key": ["long/" + "k" * (1024 - len("long/"))],
    "leading slash": ["/leading-slash.txt", "//two-leading"],
    "double slash": ["dir//double-slash.txt", "a///b"],
}
# Per TESTBED.md: moto refuses control characters in paths; SeaweedFS folds `//` and a leading `/`,
# and refuses a long key segment once versioned. SeaweedFS also lists the C0 controls other than
# tab, LF and CR (\x01-\x1f) as U+FFFD, so that no client can find those keys again: not testable here.
ON = {
    "seaweedfs": [k for k in KEY_CLASSES if k not in ("1024-byte key", "leading slash", "double slash")],
    "moto": [k for k in KEY_CLASSES if k != "control characters"],
}


def test_awkward_keys_are_copied_exactly(store: Store, manifest: str) -> None:
    """Every class of awkward key this server holds faithfully: two versions each, copied and verified."""
    src, dst = store.buckets()
    keys = [key for kind in ON[store.name] for key in KEY_CLASSES[kind]]
    for i, key in enumerate(keys):
        store.client.put_object(Bucket=src, Key=key, Body=f"first {i}".encode())
        store.client.put_object(Bucket=src, Key=key, Body=f"second {i}, longer".encode())
    r = copy(store, src, dst, manifest, "--json")
    assert r.code == 0, r.stderr
    src_h, dst_h = store.history(src), store.history(dst)
    for kind in ON[store.name]:
        for key in KEY_CLASSES[kind]:
            assert len(src_h.get(key, [])) == 2, f"{kind}: the server does not hold {key!r} as written"
            assert shape({key: dst_h.get(key, [])}) == shape({key: src_h[key]}), f"{kind}: {key!r}"
            assert store.client.get_object(Bucket=dst, Key=key)["Body"].read().startswith(b"second"), key
    assert json.loads(r.stdout)["job"]["copied"] == 2 * len(keys)
    assert store.run("verify", f"s3://{src}", f"s3://{dst}", "--manifest", manifest).code == 0


def test_zero_byte_objects(store: Store, manifest: str) -> None:
    src, dst = store.buckets()
    c = store.new_client()  # a zero-byte PUT spoils its connection on SeaweedFS (test_fidelity): a client of its own
    for key in ("empty", "dir/empty"):
        c.put_object(Bucket=src, Key=key, Body=b"")
    c.put_object(Bucket=src, Key="empty", Body=b"")
    c.close()
    r = copy(store, src, dst, manifest)
    assert r.code == 0, r.stderr
    h = store.history(dst)
    assert shape(h) == shape(store.history(src))
    assert all(size == 0 for entries in h.values() for _, size, _, _ in entries)


def _run_slowly_until_listed(store: Store, src: str, dst: str, manifest: str, key: str) -> subprocess.Popen[str]:
    """Start a slow copy (one worker, 8 requests/s) and return once `key` is listed (pending) in the manifest."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | store.env
    args = ["copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json"]
    args += ["--concurrency", "1", "--shards", "1", "--max-rps", "8"]
    p = subprocess.Popen(
        [sys.executable, "-m", "backfill", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while True:
        assert p.poll() is None and time.monotonic() < deadline, "the copy ended before the key was listed"
        with contextlib.suppress(sqlite3.Error), sqlite3.connect(f"file:{manifest}?mode=ro", uri=True) as db:
            row = db.execute("SELECT state FROM version WHERE key = ?", (key,)).fetchone()
            if row is not None:
                assert row[0] == 0, "the key was copied before the test could change it: slow the copy down"
                return p
        time.sleep(0.02)


def test_source_version_deleted_during_the_run_is_skipped(seaweed: Store, manifest: str) -> None:
    src, dst = seaweed.buckets()
    for i in range(8):
        seaweed.client.put_object(Bucket=src, Key=f"a{i}", Body=b"a")
    gone = seaweed.client.put_object(Bucket=src, Key="z-gone", Body=b"here when listed")["VersionId"]
    p = _run_slowly_until_listed(seaweed, src, dst, manifest, "z-gone")
    seaweed.client.delete_object(Bucket=src, Key="z-gone", VersionId=gone)  # gone for good, not a delete marker
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    s = json.loads(out)
    assert s["job"]["copied"] == 8 and s["job"]["skipped"] == 1
    assert "skipped: vanished from the source since it was listed" in s["problems"]
    assert "z-gone" not in seaweed.history(dst)
    st = seaweed.run("status", "--manifest", manifest, "--json")
    examples = json.loads(st.stdout)["examples"]
    assert [(e["key"], e["state"]) for e in examples] == [("z-gone", "skipped")]


def test_key_overwritten_during_the_run_copies_the_listed_version(seaweed: Store, manifest: str) -> None:
    src, dst = seaweed.buckets()
    for i in range(8):
        seaweed.client.put_object(Bucket=src, Key=f"a{i}", Body=b"a")
    seaweed.client.put_object(Bucket=src, Key="z-busy", Body=b"as listed")
    p = _run_slowly_until_listed(seaweed, src, dst, manifest, "z-busy")
    seaweed.client.put_object(Bucket=src, Key="z-busy", Body=b"written during the run")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    replica = seaweed.history(dst)["z-busy"]
    assert len(replica) == 1
    got = seaweed.client.get_object(Bucket=dst, Key="z-busy", VersionId=replica[0][3])["Body"].read()
    assert got == b"as listed"  # the version listed, by its VersionId: not the newer one


def test_a_single_part_object_above_the_multipart_threshold(seaweed: Store, manifest: str) -> None:
    """SeaweedFS reports the 4 MiB chunks of a single PUT as parts, a layout UploadPartCopy cannot
    reproduce (a part under 5 MiB): the --part-size layout is used instead."""
    src, dst = seaweed.buckets()
    seaweed.client.put_object(Bucket=src, Key="big", Body=b"B" * (7 * 1024 * 1024 + 3))
    r = copy(seaweed, src, dst, manifest, "--multipart-threshold", "5MiB", "--part-size", "5MiB")
    assert r.code == 0, r.stderr
    (entry,) = seaweed.history(dst)["big"]
    assert entry[1] == 7 * 1024 * 1024 + 3
    assert seaweed.client.get_object(Bucket=dst, Key="big")["Body"].read() == b"B" * (7 * 1024 * 1024 + 3)
