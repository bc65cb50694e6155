"""What every benchmark shares: pinning, measuring a child process, seeding and reading buckets, the machine."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"  # gitignored: logs, manifests, the peers' venv, raw results
OBJECT_SIZE = 1024
SERVER_CPU = 0
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
CLIENT_CPU = 1


def can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cmd: Sequence[str], cpu: int | None) -> list[str]:
    """`cmd` pinned to one CPU with taskset (which execs it: the measured process is the command itself)."""
    if cpu is None or not can_pin():
        return list(cmd)
    return ["taskset", "-c", str(cpu), *cmd]


@dataclass(frozen=True, slots=True)
class Measured:
    """One child process: exit code, wall seconds, CPU seconds (its whole waited-for tree), peak RSS."""

    code: int
    wall: float
    user: float
    system: float
    max_rss_kib: int  # the largest single process of the tree (Linux wait4 semantics)

    @property
    def cpu(self) -> float:
        return self.user + self.system


# Runs the measured command as its child and reports that child's own rusage. It is
# needed because Linux carries a process's RSS high-water mark across exec, and
# Python starts children with vfork: a command started straight from this harness
# would report the harness's peak RSS (tens of MiB) as its own. `python -S` keeps
# the wrapper (and so the floor it sets) small; `wall` excludes its start-up.
_WRAPPER = """
import os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
t = time.monotonic()
pid = os.posix_spawnp(argv[0], argv, os.environ)
_, status, ru = os.wait4(pid, 0)
wall = time.monotonic() - t
with open(out, "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {wall} {ru.ru_utime} {ru.ru_stime} {ru.ru_maxrss}")
"""


def measure(cmd: Sequence[str], *, env: dict[str, str], log: Path, cwd: Path | None = None) -> Measured:
    """Run `cmd` to its end; its stdout goes to `log`, its stderr to `log`.err.

    CPU (user + system) and peak RSS are the command's own and those of the children
    it waited for, through os.wait4 in a small wrapper process (see _WRAPPER), not a
    high-water mark across every process this harness has started. A `taskset`
    prefix is kept in front of the wrapper, whose child inherits the pinning.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = list(cmd)
    prefix: list[str] = []
    if cmd and cmd[0] == "taskset":
        prefix, cmd = cmd[:3], cmd[3:]
    result = Path(f"{log}.rusage")
    result.unlink(missing_ok=True)
    wrapped = [*prefix, sys.executable, "-S", "-c", _WRAPPER, str(result), *cmd]
    with log.open("wb") as out, Path(f"{log}.err").open("wb") as err:
        proc = subprocess.Popen(
            wrapped, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            code = proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if code != 0 or not result.exists():
        raise RuntimeError(f"the measuring wrapper failed ({code}) for {' '.join(cmd)}: {tail(Path(f'{log}.err'))}")
    rc, wall, user, system, rss = result.read_text().split()
    return Measured(int(rc), float(wall), float(user), float(system), int(rss))


def tail(path: Path, n: int = 1500) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-n:].strip()
    return ""


def s3_client(endpoint: str, access_key: str, secret_key: str, *, pool: int = 64) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(max_pool_connections=pool, s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
    )


def make_bucket(client: Any, name: str) -> None:
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})


def bucket_exists(client: Any, name: str) -> bool:
    return any(b["Name"] == name for b in client.list_buckets().get("Buckets", []))


# --- the source's shape ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    """A source bucket: `objects` keys in 16 prefixes, `versions` versions each, 1 KiB each, every body unique.

    With versions > 1, some keys carry delete markers: every 10th key (i % 10 == 7)
    has one after its first version (a deleted-then-restored history), and every
    10th key (i % 10 == 3) ends with one (the key is deleted: it has no current
    object, so a latest-only copy leaves it out).
    """

    objects: int
    versions: int = 1
    markers: bool = True  # with versions > 1

    def key(self, i: int) -> str:
        return f"p{i % 16:02x}/obj-{i:07d}"

    def restored(self, i: int) -> bool:
        return self.markers and self.versions > 1 and i % 10 == 7

    def deleted(self, i: int) -> bool:
        return self.markers and self.versions > 1 and i % 10 == 3

    @property
    def current_objects(self) -> int:
        return sum(1 for i in range(self.objects) if not self.deleted(i))

    @property
    def history_entries(self) -> int:
        """Versions plus delete markers: what a complete (all versions) copy must create."""
        markers = sum(1 for i in range(self.objects) if self.restored(i) or self.deleted(i))
        return self.objects * self.versions + markers

    def describe(self) -> str:
        s = f"{self.objects:,} keys × {self.versions} version{'s' if self.versions > 1 else ''} of 1 KiB"
        if self.versions > 1 and self.markers:
            s += (
                f", with delete markers (10% of keys deleted-then-restored, 10% deleted): "
                f"{self.history_entries:,} versions and markers, {self.current_objects:,} current objects"
            )
        return s

    def as_dict(self) -> dict[str, int]:
        return {"objects": self.objects, "versions": self.versions, "markers": self.markers, "format": 1}


def body(key: str, version: int, filler: bytes) -> bytes:
    head = f"{key} v{version} ".encode()
    return head + filler[len(head) : OBJECT_SIZE]


def _filler(shape: Shape) -> bytes:
    return random.Random(f"{shape.objects}/{shape.versions}").randbytes(OBJECT_SIZE)


def seed(
    client: Any, endpoint: str, env: dict[str, str], bucket: str, shape: Shape, work: Path, s5cmd: str | None
) -> None:
    """Fill `bucket` (created, versioned) with `shape`, in history order per key.

    With s5cmd, one `s5cmd run` per round of versions (each key's round j before
    its round j+1): ≈1,000 PUTs/s here. Without it, boto3 from 32 threads.
    """
    make_bucket(client, bucket)
    filler = _filler(shape)
    rounds: list[list[tuple[str, int | None]]] = []  # (key, version) to PUT, or (key, None) for a delete marker
    for j in range(shape.versions):
        rounds.append([(shape.key(i), j) for i in range(shape.objects)])
        if j == 0:
            rounds.append([(shape.key(i), None) for i in range(shape.objects) if shape.restored(i)])
    rounds.append([(shape.key(i), None) for i in range(shape.objects) if shape.deleted(i)])
    rounds = [r for r in rounds if r]
    if s5cmd is None:
        for r in rounds:
            _seed_round_boto3(client, bucket, r, filler)
        return
    files = work / "seed-files"
    shutil.rmtree(files, ignore_errors=True)
    files.mkdir(parents=True)
    for n, r in enumerate(rounds):
        lines = []
        for m, (key, version) in enumerate(r):
            if version is None:
                lines.append(f"rm s3://{bucket}/{key}\n")
            else:
                f = files / f"{n}-{m}"
                f.write_bytes(body(key, version, filler))
                lines.append(f"cp {f} s3://{bucket}/{key}\n")
        cmds = files / f"round-{n}.txt"
        cmds.write_text("".join(lines))
        p = subprocess.run(
            pinned([s5cmd, "--endpoint-url", endpoint, "--log", "error", "run", str(cmds)], CLIENT_CPU),
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if p.returncode != 0:
            raise RuntimeError(f"seeding with s5cmd failed ({p.returncode}): {p.stderr[-1500:]}")
        for m in range(len(r)):
            with contextlib.suppress(FileNotFoundError):
                (files / f"{n}-{m}").unlink()
    shutil.rmtree(files, ignore_errors=True)


def _seed_round_boto3(client: Any, bucket: str, r: list[tuple[str, int | None]], filler: bytes) -> None:
    def one(item: tuple[str, int | None]) -> None:
        key, version = item
        if version is None:
            client.delete_object(Bucket=bucket, Key=key)
        else:
            client.put_object(Bucket=bucket, Key=key, Body=body(key, version, filler))

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(one, r))


def ensure_seeded(
    client: Any, endpoint: str, env: dict[str, str], bucket: str, shape: Shape, work: Path, s5cmd: str | None
) -> bool:
    """Seed `bucket` unless a data dir being reused already holds it in this shape. True if it seeded."""
    marker = work / "seeded.json"
    done: dict[str, Any] = json.loads(marker.read_text()) if marker.exists() else {}
    if done.get(bucket) == shape.as_dict() and bucket_exists(client, bucket):
        return False
    if bucket_exists(client, bucket):
        client.delete_bucket(Bucket=bucket)  # SeaweedFS drops a bucket with its contents
    done.pop(bucket, None)
    marker.write_text(json.dumps(done))
    seed(client, endpoint, env, bucket, shape, work, s5cmd)
    done[bucket] = shape.as_dict()
    marker.write_text(json.dumps(done, indent=1))
    return True


# --- reading buckets (for the checks) -----------------------------------------------------


def current_objects(client: Any, bucket: str) -> dict[str, str]:
    """key → ETag of every current object."""
    out: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["ETag"].strip('"')
    return out


def histories(client: Any, bucket: str) -> dict[str, list[tuple[bool, str]]]:
    """key → its history, newest first, as (is a delete marker, ETag), in the server's own order.

    Read from the raw ListObjectVersions XML: botocore splits versions and delete
    markers into two lists, and their timestamps can tie.
    """
    bodies: list[bytes] = []

    def grab(response_dict: dict[str, Any], **_: Any) -> None:
        bodies.append(response_dict["body"])

    client.meta.events.register("before-parse.s3.ListObjectVersions", grab)
    out: dict[str, list[tuple[bool, str]]] = {}
    try:
        params: dict[str, Any] = {"Bucket": bucket}
        while True:
            r = client.list_object_versions(**params)
            for el in ET.fromstring(bodies[-1]):
                tag = el.tag.removeprefix(_NS)
                if tag in ("Version", "DeleteMarker"):
                    key = el.findtext(_NS + "Key") or ""
                    etag = (el.findtext(_NS + "ETag") or "").strip('"')
                    out.setdefault(key, []).append((tag == "DeleteMarker", etag))
            if not r.get("IsTruncated"):
                return out
            params["KeyMarker"] = r["NextKeyMarker"]
            params["VersionIdMarker"] = r["NextVersionIdMarker"]
    finally:
        client.meta.events.unregister("before-parse.s3.ListObjectVersions", grab)


def content_md5(client: Any, bucket: str, key: str, version_id: str | None = None) -> str:
    extra = {"VersionId": version_id} if version_id else {}
    return hashlib.md5(client.get_object(Bucket=bucket, Key=key, **extra)["Body"].read()).hexdigest()


# --- the machine --------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        ram = f"{kib / 1024 / 1024:.1f} GiB"
    os_name = platform.platform()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))}, kernel {platform.release()}"
    return {
        "cores": str(os.cpu_count() or 1),
        "cpu": cpu,
        "ram": ram,
        "os": os_name,
        "python": platform.python_version(),
    }


def seaweed_version() -> str:
    from backfill.seaweed import weed_binary

    p = subprocess.run([weed_binary(), "version"], capture_output=True, text=True, check=False)
    words = p.stdout.split()
    return words[2] if p.returncode == 0 and len(words) > 2 and words[0] == "version" else "unknown version"


def wait_idle(pid: int, *, below: float = 0.05, window: float = 0.5, limit: float = 30.0) -> float:
    """Wait until process `pid` (the server) uses less than `below` of a CPU over `window` seconds.

    SeaweedFS reclaims a dropped bucket's volumes, and grows them for a new one, in
    the background: a run started meanwhile would pay for the previous one's clean-up.
    Returns the seconds waited (at most `limit`).
    """
    tick = os.sysconf("SC_CLK_TCK")

    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime, stime

    start = time.monotonic()
    with contextlib.suppress(OSError):
        before = cpu()
        while time.monotonic() - start < limit:
            time.sleep(window)
            now = cpu()
            if now - before < below * window:
                break
            before = now
    return time.monotonic() - start


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def git_commit() -> str:
    p = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "backfill"], capture_output=True)
    return p.stdout.strip() + ("+changes" if dirty.stdout.strip() else "") if p.returncode == 0 else "unknown"


def compile_backfill() -> None:
    """Byte-compile backfill as `pip install` does, so that its start-up is a user's.

    An editable install under PYTHONDONTWRITEBYTECODE (set on this test bed)
    otherwise compiles backfill's own modules from source at every start.
    """
    import compileall

    compileall.compile_dir(str(ROOT / "backfill"), quiet=1)


def backfill_copy_options() -> set[str]:
    """The option names `backfill copy` accepts (read from the CLI itself, not its help text)."""
    import typer

    from backfill.cli import app

    group: Any = typer.main.get_command(app)
    copy = group.commands["copy"]
    return {opt for p in copy.params for opt in getattr(p, "opts", [])}


def has_uvloop() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


# --- the delay proxy ----------------------------------------------------------------------


@dataclass
class ProxyRun:
    """The delay proxy's process: its URL while it runs; its CPU seconds and stats once it has stopped."""

    url: str
    cpu: float = 0.0
    stats: dict[str, int] | None = None


@contextlib.contextmanager
def delay_proxy(upstream: str, rtt_ms: float, *, log: Path) -> Iterator[ProxyRun]:
    """testbed/proxy.py in its own process, pinned to the server's CPU."""
    stats_file = log.with_suffix(".stats.json")
    cmd = [sys.executable, "-m", "testbed.proxy", "--upstream", upstream, "--rtt-ms", str(rtt_ms)]
    cmd = pinned([*cmd, "--stats-file", str(stats_file)], SERVER_CPU)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
    run = ProxyRun("")
    try:
        assert proc.stdout is not None
        run.url = proc.stdout.readline().decode().strip()
        if not run.url.startswith("http://"):
            proc.wait(timeout=5)
            raise RuntimeError(f"the delay proxy did not start: {tail(log)}")
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    run.cpu = ru.ru_utime + ru.ru_stime
                    break
                time.sleep(0.05)
            else:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        with contextlib.suppress(OSError, ValueError):
            run.stats = json.loads(stats_file.read_text())
