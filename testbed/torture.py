"""Crash-resume torture: stop `backfill copy` again and again at random moments, resume each time.

Shared by tests/test_torture.py (a size that fits CI) and benchmarks/torture.py
(any size). Everything is seeded: the bucket's contents and the moments of the stops.

A stop is one of:
- `startup`: SIGKILL a random fraction of a second after the process starts
  (while it opens the buckets, discovers shards, aborts leftovers, lists);
- `copying`: SIGKILL once the manifest records a random number of new copies;
- `write`: SIGKILL as soon as the manifest's write-ahead log is seen changing
  (a transaction being written or committed);
- `multipart`: SIGKILL as soon as the replica lists an open multipart upload
  (parts being copied), or after a few seconds without one;
- `sigint`: Ctrl-C (a clean stop: exit 130, the resume command printed, and no
  multipart upload left open).
"""

from __future__ import annotations

import json
import random
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.store import Store, copied_versions, shape, start_cli

MiB = 1024 * 1024
KINDS = ("startup", "copying", "write", "multipart")
# Copies left in flight by a killed run land within well under a second on a local server (the
# largest here is 12 MiB), and a new process needs about a second just to start: one second of
# settling is ample here. On AWS a 5 GiB copy can land minutes after its client died (the default).
SETTLE_SECONDS = "1"


@dataclass
class Seeded:
    versions: int = 0
    delete_markers: int = 0
    multipart_keys: set[str] = field(default_factory=set)


def seed(store: Store, bucket: str, keys: int, big: int, seed: int) -> Seeded:
    """`keys` small keys in 8 "directories" with 1-3 versions, some delete markers (some rewritten
    after them), and `big` keys of 6-12 MiB versions (multipart above a 5 MiB threshold), half of
    them uploaded in 5 MiB parts (a part layout to reproduce), half in one piece."""
    rng = random.Random(seed)
    c = store.client
    plan: list[tuple[str, list[str]]] = []  # key, its history ("v" a version, "m" a delete marker)
    for i in range(keys):
        history = ["v"] * rng.choice([1, 1, 1, 2, 3])
        if rng.random() < 0.12:
            history.append("m")
            if rng.random() < 0.4:
                history.append("v")
        plan.append((f"d{i % 8}/k{i:06d}", history))
    out = Seeded()
    for h in (h for _, h in plan):
        out.versions += len(h)
        out.delete_markers += h.count("m")
    big_plan = []
    for i in range(big):
        key = f"d{(i * 3) % 8}/big-{i:02d}"  # spread over the directories, so over the shards
        sizes = [rng.randint(6 * MiB, 12 * MiB) for _ in range(rng.choice([1, 2]))]
        big_plan.append((key, sizes, i % 2 == 0))
        out.versions += len(sizes)
        out.multipart_keys.add(key)

    def small(item: tuple[str, list[str]]) -> None:
        key, history = item
        for n, what in enumerate(history):
            if what == "v":
                c.put_object(Bucket=bucket, Key=key, Body=f"{key} #{n} {'x' * (n * 7 % 50)}".encode())
            else:
                c.delete_object(Bucket=bucket, Key=key)

    def large(item: tuple[str, list[int], bool]) -> None:
        key, sizes, in_parts = item
        for n, size in enumerate(sizes):
            data = bytes([n + 65]) * size
            if not in_parts:
                c.put_object(Bucket=bucket, Key=key, Body=data)
                continue
            up = c.create_multipart_upload(Bucket=bucket, Key=key)
            parts = []
            for number, start in enumerate(range(0, size, 5 * MiB), start=1):
                r = c.upload_part(
                    Bucket=bucket,
                    Key=key,
                    UploadId=up["UploadId"],
                    PartNumber=number,
                    Body=data[start : start + 5 * MiB],
                )
                parts.append({"ETag": r["ETag"], "PartNumber": number})
            c.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
            )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(small, plan))
        list(pool.map(large, big_plan))
    return out


def open_uploads(store: Store, bucket: str) -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = store.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return uploads


class Process:
    """`backfill` in a subprocess, its stderr read as it comes: the progress lines tell how many
    versions this run has copied (fresher than the manifest, whose outcomes are committed in batches)."""

    _COPIED = re.compile(r"\] ([\d,]+) copied")

    def __init__(self, store: Store, *args: str) -> None:
        self.p = start_cli(store, *args)
        self.copied = 0
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.p.stderr is not None
        for line in self.p.stderr:
            self.err.append(line)
            m = self._COPIED.search(line)
            if m:
                self.copied = int(m.group(1).replace(",", ""))

    def poll(self) -> int | None:
        return self.p.poll()

    def finish(self, timeout: float) -> tuple[str, str]:
        assert self.p.stdout is not None and self.p.stderr is not None
        with self.p.stdout:
            out = self.p.stdout.read()
        self.p.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        self.p.stderr.close()
        return out, "".join(self.err)


def _wait(cond: Callable[[], bool], p: Process, timeout: float, tick: float = 0.01) -> bool:
    """Until `cond` holds (True), the process ends, or the time is up (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            return False
        if cond():
            return True
        time.sleep(tick)
    return False


def _wal_changed(manifest: str) -> Callable[[], bool]:
    wal = Path(f"{manifest}-wal")

    def stamp() -> tuple[int, int]:
        try:
            st = wal.stat()
        except FileNotFoundError:
            return (-1, -1)
        return (st.st_size, st.st_mtime_ns)

    first = stamp()
    return lambda: stamp() != first


@dataclass
class Stop:
    kind: str
    seconds: float  # from start to the signal
    copied_before: int
    copied_after: int
    hit: bool  # the awaited moment came (a write seen, an upload open) before the signal
    exit_code: int | None


@dataclass
class Outcome:
    stops: list[Stop]
    total: int
    final: dict[str, Any]
    seconds: float

    def count(self, kind: str, *, hit: bool | None = None) -> int:
        return sum(1 for s in self.stops if s.kind == kind and (hit is None or s.hit == hit))


def _stop_once(
    store: Store, dst: str, manifest: str, args: list[str], kind: str, rng: random.Random, hurry: bool
) -> tuple[Stop, str]:
    """Start the copy and stop it as `kind` says; the stop and the run's stderr.

    `hurry`: little work is left for the stops to come, so this one comes sooner.
    """
    before = copied_versions(manifest)
    leftover = {u["UploadId"] for u in open_uploads(store, dst)}
    p = Process(store, *args)
    t0 = time.monotonic()
    hit = False
    patience = 0.3 if hurry else 1.0
    if kind == "startup":
        time.sleep(rng.uniform(0.1, 1.2))
    else:
        # Once this run has copied something: a little later, or at the moment awaited.
        _wait(lambda: p.copied > 0, p, timeout=60, tick=0.005)
        if kind == "write":
            time.sleep(rng.uniform(0, 0.1 * patience))
            hit = _wait(_wal_changed(manifest), p, timeout=patience, tick=0.001)
        elif kind == "multipart":
            new_upload = lambda: any(u["UploadId"] not in leftover for u in open_uploads(store, dst))  # noqa: E731
            hit = _wait(new_upload, p, timeout=patience, tick=0.01)
        else:
            time.sleep(rng.uniform(0, 0.4 * patience))
    seconds = time.monotonic() - t0
    if p.poll() is None:
        p.p.send_signal(signal.SIGINT if kind == "sigint" else signal.SIGKILL)
    _, err = p.finish(timeout=120)
    return Stop(kind, seconds, before, copied_versions(manifest), hit, p.p.returncode), err


def torture(
    store: Store,
    src: str,
    dst: str,
    manifest: str,
    *,
    total: int,
    kills: int,
    sigints: int,
    seed: int,
    concurrency: int = 16,
    max_rps: int = 300,
    log: Callable[[str], None] | None = None,
) -> Outcome:
    """Stop the copy `kills` times with SIGKILL and `sigints` times with Ctrl-C, then let it finish.

    `max_rps` caps the copy's pace, so that a fast machine does not finish the job before the
    last stop: a stop comes within about half a second of a run's first copy.
    """
    rng = random.Random(seed)
    args = [
        "copy",
        f"s3://{src}",
        f"s3://{dst}",
        "--manifest",
        manifest,
        "--concurrency",
        str(concurrency),
        "--multipart-threshold",
        "5MiB",
        "--part-size",
        "5MiB",
        "--settle-seconds",
        SETTLE_SECONDS,
        "--max-rps",
        str(max_rps),
        "--progress-interval",
        "0.05",
    ]
    kinds = [KINDS[i % len(KINDS)] for i in range(kills)] + ["sigint"] * sigints
    rng.shuffle(kinds)
    stops: list[Stop] = []
    began = time.monotonic()
    for n, kind in enumerate(kinds):
        hurry = (total - copied_versions(manifest)) / (len(kinds) - n) < 150
        stop, err = _stop_once(store, dst, manifest, args, kind, rng, hurry)
        stops.append(stop)
        code = stop.exit_code
        if log:
            log(
                f"stop {n + 1}/{len(kinds)}: {kind} after {stop.seconds:.2f} s, "
                f"copied {stop.copied_before} → {stop.copied_after}, hit={stop.hit}, exit {code}"
            )
        assert "Traceback" not in err, err
        if code == 0:
            break  # the job finished before this stop: no more to do
        if kind == "sigint":
            assert code == 130, (code, err)
            assert "To resume, run: backfill copy" in err, err
            assert not open_uploads(store, dst), "a clean stop left a multipart upload open"
        else:
            assert code == -signal.SIGKILL, (code, err)
    i = args.index("--max-rps")
    p = Process(store, *args[:i], *args[i + 2 :], "--json")  # the last run at full speed
    out, err = p.finish(timeout=600)
    assert p.p.returncode == 0, err
    assert "Traceback" not in err, err
    return Outcome(stops, total, json.loads(out), time.monotonic() - began)


def check(store: Store, src: str, dst: str, manifest: str, seeded: Seeded, outcome: Outcome) -> None:
    """Nothing lost, nothing duplicated, histories in order, no upload left open, a sound manifest."""
    job = outcome.final["job"]
    assert job["copied"] == outcome.total, job
    assert job["pending"] == 0 and job["failed"] == 0 and job["skipped"] == 0, job

    source, replica = store.history(src), store.history(dst)
    missing = {k: len(v) - len(replica.get(k, [])) for k, v in source.items() if len(replica.get(k, [])) < len(v)}
    extra = {k: len(v) - len(source.get(k, [])) for k, v in replica.items() if len(v) > len(source.get(k, []))}
    assert not missing, f"missing versions: {sorted(missing.items())[:5]}"
    assert not extra, f"duplicated versions: {sorted(extra.items())[:5]}"
    # SeaweedFS's UploadPartCopy does not reproduce a multipart ETag (TESTBED.md): sizes and kinds
    # in order for the large keys, ETags too for all others.
    assert shape(source, etags=False) == shape(replica, etags=False)
    small_src = {k: v for k, v in shape(source).items() if k not in seeded.multipart_keys}
    small_dst = {k: v for k, v in shape(replica).items() if k not in seeded.multipart_keys}
    assert small_src == small_dst

    assert not open_uploads(store, dst), "multipart uploads left open in the replica"
    with sqlite3.connect(manifest) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("SELECT count(*) FROM upload").fetchone()[0] == 0
        rvids = [r[0] for r in db.execute("SELECT rvid FROM version")]
    assert len(rvids) == len(set(rvids)) == outcome.total
    assert set(rvids) == {e[3] for v in replica.values() for e in v}

    r = store.run("verify", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--deep", "--json")
    assert r.code == 0, r.stdout + r.stderr
