"""Security: private files, secrets never written, and the expected bucket owners on every request.

Neither test server enforces ExpectedBucketOwner / ExpectedSourceBucketOwner (moto 5.2
ignores them; SeaweedFS 4.48 answers a wrong owner with 200), so a small recording proxy
in front of SeaweedFS checks that every request carries them, signed, and answers a
wrong owner with 403 AccessDenied as S3 does: backfill's refusal is then tested too.
"""

from __future__ import annotations

import http.client
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from testbed.store import Run, Store, shape

MiB = 1024 * 1024
SECRET = "SECRETdoNotPrintMe/0123456789abcdefghijklmn"  # the point: it must never appear
TOKEN = "TOKENdoNotPrintMe+FwoGZXIvYXdzEJr//////////wEaDKnown"


def run(store: Store, *args: str, env: dict[str, str] | None = None, umask: int | None = None) -> Run:
    """The CLI in a subprocess (as testbed.store.run_cli), optionally under another umask."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    p = subprocess.run(
        [sys.executable, "-m", "backfill", *args],
        env={**base, **store.env, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        umask=-1 if umask is None else umask,
    )
    return Run(p.returncode, p.stdout, p.stderr)


# --- 0600 -----------------------------------------------------------------------------------


def test_manifest_and_reports_are_private_even_under_a_permissive_umask(seaweed: Store, tmp_path: Path) -> None:
    src, dst = seaweed.buckets()
    for i in range(5):
        seaweed.client.put_object(Bucket=src, Key=f"k{i}", Body=b"v")
    manifest = tmp_path / "job.db"
    assert run(seaweed, "copy", f"s3://{src}", f"s3://{dst}", "--manifest", str(manifest), umask=0).code == 0
    seaweed.client.delete_object(Bucket=dst, Key="k0")  # a difference, so that the reports have a row
    csv_report, json_report = tmp_path / "diff.csv", tmp_path / "diff.json"
    json_report.write_text("an older report, readable by all")
    json_report.chmod(0o644)
    for report in (csv_report, json_report):
        r = run(seaweed, "verify", f"s3://{src}", f"s3://{dst}", "--report", str(report), umask=0)
        assert r.code == 1, r.stderr
        assert "k0" in report.read_text()
    files = [manifest, csv_report, json_report, *tmp_path.glob("job.db-*")]
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}


# --- secrets ------------------------------------------------------------------------------


def _leaks(where: str, text: str | bytes, *secrets: str) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [f"{s[:12]}… in {where}" for s in secrets if s.encode() in data]


def test_secret_key_and_session_token_never_written(moto: Store, seaweed: Store, tmp_path: Path) -> None:
    """A known secret key and session token, through successful runs (moto takes any key) and error
    paths (SeaweedFS refuses them): not in stdout or stderr, with or without --json, nor in the
    manifest, its WAL, or the reports."""
    leaks: list[str] = []
    creds = {"AWS_ACCESS_KEY_ID": "AKIDKNOWNFORTHETEST", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN}

    src, dst = moto.buckets()
    for i in range(5):
        moto.client.put_object(Bucket=src, Key=f"k{i}", Body=b"v" * i)
    moto.client.put_object(Bucket=src, Key="k0", Body=b"second")
    manifest = str(tmp_path / "moto.db")
    report = tmp_path / "report.json"
    runs = {
        "copy --json": run(moto, "copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json", env=creds),
        "copy --http botocore": run(
            moto, "copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--http", "botocore", env=creds
        ),
        "verify": run(
            moto, "verify", f"s3://{src}", f"s3://{dst}", "--report", str(report), "--json", "--deep", env=creds
        ),
        "status": run(moto, "status", "--manifest", manifest, "--json", env=creds),
    }
    assert all(r.code == 0 for r in runs.values()), {k: (r.code, r.stderr) for k, r in runs.items()}
    for f in (Path(manifest), *tmp_path.glob("moto.db-*"), report):
        leaks += _leaks(f.name, f.read_bytes(), SECRET, TOKEN)

    # Error paths on SeaweedFS: a session token it does not know, a wrong secret, a denied write.
    s_src, s_dst = seaweed.buckets()
    seaweed.client.put_object(Bucket=s_src, Key="k", Body=b"v")
    known = seaweed.env["AWS_ACCESS_KEY_ID"]
    errors = {
        "token": {"AWS_SECRET_ACCESS_KEY": seaweed.env["AWS_SECRET_ACCESS_KEY"], "AWS_SESSION_TOKEN": TOKEN},
        "wrong secret": {"AWS_SECRET_ACCESS_KEY": SECRET},
        "denied write": {"AWS_ACCESS_KEY_ID": "no-write", "AWS_SECRET_ACCESS_KEY": "no-write-secret"},
    }
    for n, (name, env) in enumerate(errors.items()):
        m2 = str(tmp_path / f"seaweed-{n}.db")  # each its own: no settling after an error
        extra = ("--json",) if n != 1 else ()
        r = run(seaweed, "copy", f"s3://{s_src}", f"s3://{s_dst}", "--manifest", m2, *extra, env=env)
        assert r.code == 2 and "Traceback" not in r.stderr, (name, r.stderr)
        runs[f"{name} {extra}"] = r
    runs["verify"] = run(seaweed, "verify", f"s3://{s_src}", f"s3://{s_dst}", "--json", env=errors["wrong secret"])
    assert runs["verify"].code == 2
    assert known not in SECRET
    for f in tmp_path.glob("seaweed-*.db*"):
        leaks += _leaks(f.name, f.read_bytes(), SECRET, TOKEN, "no-write-secret")
    for name, r in runs.items():
        leaks += _leaks(f"{name}: stdout", r.stdout, SECRET, TOKEN, "no-write-secret")
        leaks += _leaks(f"{name}: stderr", r.stderr, SECRET, TOKEN, "no-write-secret")
    assert not leaks


# --- expected bucket owners -------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: str
    owner: str | None
    source_owner: str | None
    copy_source: str | None
    signed: list[str]

    @property
    def operation(self) -> str:
        q = urllib.parse.parse_qs(self.query, keep_blank_values=True)
        is_bucket = self.path.strip("/").count("/") == 0
        if self.method == "HEAD":
            return "HeadBucket" if is_bucket else "HeadObject"
        if self.method == "GET":
            for param, op in (
                ("versions", "ListObjectVersions"),
                ("list-type", "ListObjectsV2"),
                ("versioning", "GetBucketVersioning"),
                ("object-lock", "GetObjectLockConfiguration"),
                ("tagging", "GetObjectTagging"),
                ("uploads", "ListMultipartUploads"),
            ):
                if param in q:
                    return op
            return "ListObjects" if is_bucket else "GetObject"
        if self.method == "PUT":
            if self.copy_source:
                return "UploadPartCopy" if "uploadId" in q else "CopyObject"
            return "PutObject"
        if self.method == "POST":
            return "CreateMultipartUpload" if "uploads" in q else "CompleteMultipartUpload"
        if self.method == "DELETE":
            return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
        return self.method


@dataclass
class OwnerProxy:
    """In front of a server: records every request's owner headers; refuses a wrong owner like S3."""

    upstream: str
    owners: dict[str, str]  # bucket → account
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def refusal(self, s: Seen) -> bool:
        bucket = s.path.lstrip("/").split("/", 1)[0]
        if s.owner is not None and s.owner != self.owners.get(bucket, s.owner):
            return True
        if s.copy_source and s.source_owner is not None:
            source_bucket = urllib.parse.unquote(s.copy_source).lstrip("/").split("/", 1)[0]
            return s.source_owner != self.owners.get(source_bucket, s.source_owner)
        return False


@pytest.fixture
def proxy(seaweed: Store) -> Iterator[OwnerProxy]:
    state = OwnerProxy(seaweed.endpoint, {})
    up = urllib.parse.urlsplit(seaweed.endpoint)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    chunk = self.rfile.read(size + 2)[:size]
                    if not size:
                        self.rfile.readline()
                        return out
                    out += chunk
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _relay(self) -> None:
            body = self._body()
            path, _, query = self.path.partition("?")
            auth = self.headers.get("Authorization", "")
            signed = auth.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";") if "SignedHeaders=" in auth else []
            s = Seen(
                self.command,
                path,
                query,
                self.headers.get("x-amz-expected-bucket-owner"),
                self.headers.get("x-amz-source-expected-bucket-owner"),
                self.headers.get("x-amz-copy-source"),
                signed,
            )
            state.seen.append(s)
            if state.refusal(s):
                error = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
                self.send_response(403)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(error)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(error)
                return
            conn = http.client.HTTPConnection(up.hostname or "127.0.0.1", up.port, timeout=120)
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():
                    if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "expect", "content-length"):
                        conn.putheader(k, v)
                if body or self.command in ("PUT", "POST"):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body or None)
                r = conn.getresponse()
                data = r.read()
                self.send_response(r.status, r.reason)
                for k, v in r.getheaders():
                    if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", r.getheader("Content-Length") or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


SOURCE_ACCOUNT, REPLICA_ACCOUNT, SOMEONE_ELSE = "111111111111", "222222222222", "333333333333"


def _seed_for_owners(seaweed: Store, proxy: OwnerProxy) -> tuple[str, str]:
    src, dst = seaweed.buckets()
    proxy.owners.update({src: SOURCE_ACCOUNT, dst: REPLICA_ACCOUNT})
    c = seaweed.client
    for i in range(6):
        c.put_object(Bucket=src, Key=f"k{i}", Body=f"{i}".encode())
    c.put_object(Bucket=src, Key="k0", Body=b"second")
    c.delete_object(Bucket=src, Key="k1")  # a delete marker: DeleteObject in the replica
    c.put_object(Bucket=src, Key="big", Body=b"B" * (6 * MiB))  # a multipart copy above 5 MiB
    return src, dst


@pytest.mark.parametrize("http_path", ["lean", "botocore"])
def test_every_request_names_the_expected_owners(
    seaweed: Store, proxy: OwnerProxy, manifest: str, http_path: str
) -> None:
    src, dst = _seed_for_owners(seaweed, proxy)
    owners = ["--expected-source-owner", SOURCE_ACCOUNT, "--expected-dest-owner", REPLICA_ACCOUNT]
    env = {"AWS_ENDPOINT_URL": proxy.url}
    args = ["--manifest", manifest, "--http", http_path, *owners]
    r = seaweed.run("copy", f"s3://{src}", f"s3://{dst}", *args, "--multipart-threshold", "5MiB", env=env)
    assert r.code == 0, r.stderr
    r = seaweed.run("verify", f"s3://{src}", f"s3://{dst}", *args, "--deep", env=env)
    assert r.code == 0, r.stdout + r.stderr
    assert shape(seaweed.history(src), etags=False) == shape(seaweed.history(dst), etags=False)

    operations = {s.operation for s in proxy.seen}
    assert operations >= {
        "HeadBucket",
        "GetBucketVersioning",
        "ListObjectVersions",
        "CopyObject",
        "DeleteObject",
        "HeadObject",
        "GetObjectTagging",
        "CreateMultipartUpload",
        "UploadPartCopy",
        "CompleteMultipartUpload",
        "GetObject",
    }, operations
    bucket_of = {SOURCE_ACCOUNT: src, REPLICA_ACCOUNT: dst}
    for s in proxy.seen:
        assert s.owner is not None, f"{s.operation} {s.path} without x-amz-expected-bucket-owner"
        assert s.path.lstrip("/").split("/")[0] == bucket_of[s.owner], (s.operation, s.path, s.owner)
        assert "x-amz-expected-bucket-owner" in s.signed, f"{s.operation}: the owner header is not signed"
        if s.operation in ("CopyObject", "UploadPartCopy"):
            assert s.source_owner == SOURCE_ACCOUNT, f"{s.operation} without the source's owner"
            assert "x-amz-source-expected-bucket-owner" in s.signed


@pytest.mark.parametrize(
    ("option", "side"), [("--expected-dest-owner", "replica"), ("--expected-source-owner", "source")]
)
def test_a_bucket_of_another_account_is_refused(
    seaweed: Store, proxy: OwnerProxy, manifest: str, option: str, side: str
) -> None:
    """The right name of the wrong bucket (someone else's account): one line naming the option, exit 2."""
    src, dst = _seed_for_owners(seaweed, proxy)
    right = {"--expected-source-owner": SOURCE_ACCOUNT, "--expected-dest-owner": REPLICA_ACCOUNT}
    owners = [x for o, account in right.items() for x in (o, SOMEONE_ELSE if o == option else account)]
    r = seaweed.run(
        "copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, *owners, env={"AWS_ENDPOINT_URL": proxy.url}
    )
    assert r.code == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if not line.startswith("manifest:")]
    assert len(lines) == 1, r.stderr
    bucket = dst if side == "replica" else src
    assert f"access denied to {side} bucket s3://{bucket}" in lines[0]
    assert f"not owned by account {SOMEONE_ELSE} ({option})" in lines[0]
    assert seaweed.history(dst) == {}
    assert not Path(manifest).exists() or _copied(manifest) == 0


def _copied(manifest: str) -> int:
    with sqlite3.connect(manifest) as db:
        return int(db.execute("SELECT count(*) FROM version WHERE state = 1").fetchone()[0])
