"""A local S3 server as the tests see it (`Store`), with an independent history oracle, and the CLI in a subprocess.

`Store.history` reads the raw ListObjectVersions XML on its own, so a test does not
trust the code it tests to say what the buckets hold. The CLI is run as a subprocess
(`python -m backfill`), exactly as a user runs it, with no AWS_* from the outside.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

_counter = itertools.count()
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"

# (is delete marker, size, ETag, version id) oldest first
Entry = tuple[bool, int, str, str]


@dataclass
class Store:
    """A running S3 server: its name ("seaweedfs" or "moto"), endpoint, the CLI's environment, an admin client."""

    name: str
    endpoint: str
    env: dict[str, str]
    client: Any = field(repr=False)

    def buckets(self, *, versioned: bool = True, dest_versioned: bool = True) -> tuple[str, str]:
        n = next(_counter)
        src, dst = f"src-{os.getpid()}-{n}", f"dst-{os.getpid()}-{n}"
        for b, v in ((src, versioned), (dst, dest_versioned)):
            self.client.create_bucket(Bucket=b)
            if v:
                self.client.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
        return src, dst

    def history(self, bucket: str, prefix: str = "") -> dict[str, list[Entry]]:
        """Every key's versions and delete markers, oldest first, in the server's own order."""
        bodies: list[bytes] = []

        def grab(response_dict: dict[str, Any], **_: Any) -> None:
            bodies.append(response_dict["body"])

        c = self.client
        c.meta.events.register("before-parse.s3.ListObjectVersions", grab)
        out: dict[str, list[Entry]] = {}
        pages: list[Any] = []
        try:
            params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            while True:
                r = c.list_object_versions(**params)
                pages.append(r)
                root = ET.fromstring(bodies[-1])
                url = root.findtext(NS + "EncodingType") == "url"
                for el in root:
                    tag = el.tag.removeprefix(NS)
                    if tag not in ("Version", "DeleteMarker"):
                        continue
                    key = el.findtext(NS + "Key") or ""
                    if url:
                        from urllib.parse import unquote_plus

                        key = unquote_plus(key)
                    entry = (
                        tag == "DeleteMarker",
                        int(el.findtext(NS + "Size") or 0),
                        (el.findtext(NS + "ETag") or "").strip('"'),
                        el.findtext(NS + "VersionId") or "",
                    )
                    out.setdefault(key, []).insert(0, entry)
                if not r.get("IsTruncated"):
                    if self.name == "moto":  # moto lists versions, then delete markers: merge by time
                        stamps = {
                            e["VersionId"]: e["LastModified"]
                            for page in pages
                            for e in page.get("Versions", []) + page.get("DeleteMarkers", [])
                        }
                        return {k: sorted(v, key=lambda e: stamps[e[3]]) for k, v in out.items()}
                    return out
                params["KeyMarker"] = r["NextKeyMarker"]
                params["VersionIdMarker"] = r["NextVersionIdMarker"]
        finally:
            c.meta.events.unregister("before-parse.s3.ListObjectVersions", grab)

    def new_client(self, endpoint: str | None = None, **config: Any) -> Any:
        """A client with connections of its own, to this store or to a proxy in front of it (`endpoint`)."""
        return s3_client(
            endpoint or self.endpoint, self.env["AWS_ACCESS_KEY_ID"], self.env["AWS_SECRET_ACCESS_KEY"], **config
        )

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 240) -> Run:
        return run_cli(*args, env={**self.env, **(env or {})}, timeout=timeout)

    def copy_via(self, endpoint_url: str, src: str, dst: str, manifest: str, *args: str) -> Run:
        """`backfill copy --json` of src into dst through a proxy (or gate) at `endpoint_url`, with `args` added."""
        cmd = ("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json", *args)
        return self.run(*cmd, env={"AWS_ENDPOINT_URL": endpoint_url})


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def start_cli(store: Store, *args: str) -> subprocess.Popen[str]:
    """The CLI started in a subprocess (to signal or kill), as run_cli runs it; stdout and stderr piped."""
    return start_cli_with(store.env, *args)


def start_cli_with(env_: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """start_cli with an environment of its own (no AWS_* from the outside), e.g. a credential_process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BOTO_"))} | env_
    return subprocess.Popen(
        [sys.executable, "-m", "backfill", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def copied_versions(manifest: str) -> int:
    """Versions a (possibly running) job's manifest records as copied; 0 while it cannot be read."""
    try:
        with sqlite3.connect(f"file:{manifest}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM version WHERE state = 1").fetchone()[0])
    except sqlite3.Error:
        return 0


def run_cli(*args: str, env: dict[str, str], timeout: float = 240, cwd: Path | None = None) -> Run:
    """The CLI in a subprocess, with no terminal on stdin (as in CI) and no AWS_* from the outside."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BOTO_"))}
    p = subprocess.run(
        [sys.executable, "-m", "backfill", *args],
        env={**base, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )
    return Run(p.returncode, p.stdout, p.stderr)


def shape(h: dict[str, list[Entry]], *, etags: bool = True) -> dict[str, list[tuple[bool, int, str]]]:
    """A history without version IDs (the replica's are new), for comparing source and replica."""
    return {k: [(dm, size, etag if etags else "") for dm, size, etag, _ in v] for k, v in h.items()}


def s3_client(endpoint: str, key: str, secret: str, **config: Any) -> Any:
    """A boto3 S3 client for a local server: path-style addressing, 3 attempts (override with `config`)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(**({"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 3}} | config)),
    )


def assert_exact_replica(store: Store, src: str, dst: str) -> None:
    """The replica holds every version and delete marker of the source once, in the source's order."""
    source, replica = store.history(src), store.history(dst)
    missing = {k: len(v) - len(replica.get(k, [])) for k, v in source.items() if len(replica.get(k, [])) < len(v)}
    extra = {k: len(v) - len(source.get(k, [])) for k, v in replica.items() if len(v) > len(source.get(k, []))}
    assert not missing, f"missing versions: {list(missing.items())[:5]}"
    assert not extra, f"duplicated versions: {list(extra.items())[:5]}"
    assert shape(source) == shape(replica)
