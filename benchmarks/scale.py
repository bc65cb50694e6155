"""`python -m benchmarks scale`: backfill at two sizes (10,000 and 200,000 versions by default).

For each size, on a local SeaweedFS pinned to CPU 0 with backfill pinned to CPU 1:
- listing alone: `backfill copy --dry-run --versions all` (shards and listing, no
  copy, no manifest), its CPU minus the same command's on an empty bucket, per
  version listed (median of 3);
- the copy: `backfill copy --versions all` into a fresh bucket: wall, CPU per copy,
  peak RSS (os.wait4: this process alone), the first copy's time as backfill
  reports it (from the start of the run, after Python's start-up), the manifest's
  bytes per version; checked by counting the replica's versions;
- checkpointing: `backfill copy` has no switch to turn the manifest off, so the
  writer is measured alone (benchmarks/checkpoint.py), fed the same number of
  versions at the copy's own rate, and compared with the copy's CPU.

Seeding 200,000 versions takes minutes: the SeaweedFS data directory
(--data-dir, default benchmarks/out/scale-seaweed) is kept, and a seeded source
is reused by the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from backfill.seaweed import local_s3
from benchmarks import report
from benchmarks.common import (
    CLIENT_CPU,
    OUT,
    ROOT,
    SERVER_CPU,
    Shape,
    backfill_copy_options,
    can_pin,
    compile_backfill,
    ensure_seeded,
    git_commit,
    has_uvloop,
    loadavg,
    make_bucket,
    measure,
    pinned,
    s3_client,
    tail,
    wait_idle,
)
from benchmarks.peers import Target, backfill_env, ensure_peers_venv, s5cmd_binary


@dataclass
class ScaleResult:
    versions: int
    listing_cpu: float  # median CPU of the dry run, s
    listing_wall: float
    listing_us_per_version: float
    copy_wall: float
    copy_cpu: float
    copies: int
    cpu_ms_per_copy: float
    peak_rss_mib: float
    first_copy_seconds: float | None
    manifest_bytes_per_version: float
    checkpoint_us_per_version: float | None
    checkpoint_share: float | None  # of the copy's CPU per version
    status_wall: float | None = None  # `backfill status --manifest` on the copy's manifest
    status_rss_mib: float | None = None
    verify_wall: float | None = None  # `backfill verify --manifest` of the copy
    verify_cpu: float | None = None
    verify_rss_mib: float | None = None


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _backfill(target: Target, *extra: str, command: str = "copy") -> list[str]:
    if command == "status":
        return [sys.executable, "-m", "backfill", "status", *extra]
    return [sys.executable, "-m", "backfill", command, f"s3://{target.src}", f"s3://{target.dst}", *extra]


def count_versions(client: Any, bucket: str) -> int:
    n = 0
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        n += len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
    return n


def main(args: argparse.Namespace) -> None:
    compile_backfill()
    sizes = [int(x) for x in args.sizes.split(",")]
    k = args.versions_per_key
    if any(s % k for s in sizes):
        sys.exit("each size must be a multiple of --versions-per-key")
    data_dir = Path(args.data_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = OUT / f"scale-{stamp}"
    out_dir.mkdir(parents=True)
    s5cmd = s5cmd_binary() if ensure_peers_venv(log) else None
    lean = ["--http", "lean"] if "--http" in backfill_copy_options() else []
    load_before = loadavg()
    results: list[ScaleResult] = []
    with local_s3(data_dir, cpu=SERVER_CPU if can_pin() else None) as s3:
        client = s3_client(s3.endpoint_url, s3.access_key, s3.secret_key)
        for bucket in ("scale-empty", "scale-dry-dst"):
            if not any(b["Name"] == bucket for b in client.list_buckets().get("Buckets", [])):
                make_bucket(client, bucket)

        def run(
            name: str, src: str, dst: str, *extra: str, command: str = "copy", cwd: Path | None = None
        ) -> tuple[Any, Path]:
            work = out_dir / name
            work.mkdir()
            t = Target(s3.endpoint_url, s3.access_key, s3.secret_key, src, dst, work)
            wait_idle(s3.pid)  # not while the server still reclaims an earlier bucket
            cmd = pinned(_backfill(t, *extra, command=command), CLIENT_CPU)
            m = measure(cmd, env=backfill_env(t), log=work / "out", cwd=cwd or work)
            if m.code != 0:
                raise SystemExit(f"{name}: backfill exited {m.code}: {tail(work / 'out.err')}")
            return m, work

        sources = dict(x.split("=", 1) for x in args.source)  # size → a bucket seeded by hand
        for size in sizes:  # every source first: each size is then measured beside the same data
            if str(size) in sources:
                log(f"s3://{sources[str(size)]} stands for the source of {size} versions (the dry run counts them)")
                continue
            shape = Shape(size // k, k, markers=False)
            t0 = time.monotonic()
            seeded = ensure_seeded(client, s3.endpoint_url, s3.env(), f"scale-{size}-{k}", shape, data_dir, s5cmd)
            log(
                f"{'seeded' if seeded else 'reusing'} s3://scale-{size}-{k}: {shape.describe()} "
                f"({time.monotonic() - t0:.0f} s)"
            )
        if args.seed_only:
            return
        empty = [
            run(f"empty-dry-{i}", "scale-empty", "scale-dry-dst", "--dry-run", *lean)[0] for i in range(args.dry_runs)
        ]
        base_cpu = statistics.median(m.cpu for m in empty)
        log(f"dry run on an empty bucket: CPU {base_cpu:.2f} s, wall {statistics.median(m.wall for m in empty):.2f} s")
        for size in sizes:
            src = sources.get(str(size), f"scale-{size}-{k}")
            dry = [
                run(f"{size}-dry-{i}", src, "scale-dry-dst", "--dry-run", "--json", *lean) for i in range(args.dry_runs)
            ]
            listed = json.loads((dry[0][1] / "out").read_text())["this_run"]["listed"]
            assert listed == size, (listed, size)
            dry_cpu = statistics.median(m.cpu for m, _ in dry)
            dry_wall = statistics.median(m.wall for m, _ in dry)
            dst = f"scale-dst-{stamp[-6:]}-{size}"
            make_bucket(client, dst)
            m, work = run(f"{size}-copy", src, dst, "--versions", "all", "--json", "--manifest", "m.db", *lean)
            summary = json.loads((work / "out").read_text())
            copies = summary["this_run"]["copied"]
            found = count_versions(client, dst)
            if copies != size or found != size:
                raise SystemExit(f"copy of {size} versions: backfill says {copies} copied, the replica holds {found}")
            manifest = sum(f.stat().st_size for f in work.glob("m.db*"))
            rate = copies / m.wall
            probe = None
            if args.checkpoint and size <= args.probe_upto:  # it is paced at the copy's rate: as long as the copy
                probe = _checkpoint_probe(size, rate, out_dir / f"{size}-checkpoint")
            cp_us = probe["cpu_us_per_version"] if probe else None
            r = ScaleResult(
                versions=size,
                listing_cpu=dry_cpu,
                listing_wall=dry_wall,
                listing_us_per_version=max(0.0, dry_cpu - base_cpu) * 1e6 / size,
                copy_wall=m.wall,
                copy_cpu=m.cpu,
                copies=copies,
                cpu_ms_per_copy=m.cpu * 1000 / copies,
                peak_rss_mib=m.max_rss_kib / 1024,
                first_copy_seconds=summary["this_run"].get("first_copy_seconds"),
                manifest_bytes_per_version=manifest / copies,
                checkpoint_us_per_version=cp_us,
                checkpoint_share=(cp_us / 1000) / (m.cpu * 1000 / copies) if cp_us is not None else None,
            )
            st, _ = run(f"{size}-status", src, dst, "--manifest", str(work / "m.db"), "--json", command="status")
            r.status_wall, r.status_rss_mib = st.wall, st.max_rss_kib / 1024
            vf, vwork = run(
                f"{size}-verify", src, dst, "--manifest", str(work / "m.db"), "--json", *lean, command="verify"
            )
            verified = json.loads((vwork / "out").read_text())
            log(f"verify --manifest: {json.dumps(verified)[:600]}")
            r.verify_wall, r.verify_cpu, r.verify_rss_mib = vf.wall, vf.cpu, vf.max_rss_kib / 1024
            results.append(r)
            log(json.dumps(asdict(r)))
            client.delete_bucket(Bucket=dst)  # SeaweedFS drops it with its contents
    (out_dir / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    version = f"backfill {git_commit()}" + (" --http lean" if lean else "") + (", uvloop" if has_uvloop() else "")
    section = report.scale_section(
        results=results,
        versions_per_key=k,
        command=shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]]),
        version=version,
        pinned=can_pin(),
        load=(load_before, loadavg()),
        base_cpu=base_cpu,
        note=args.note,
    )
    print(section)
    if args.record:
        report.append_results(section)
        log("appended to benchmarks/RESULTS.md")


def _checkpoint_probe(n: int, rate: float, work: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.checkpoint", "--versions", str(n), "--rate", f"{rate:.0f}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    m = measure(pinned(cmd, CLIENT_CPU), env=env, log=work / "out", cwd=ROOT)
    if m.code != 0:
        raise SystemExit(f"checkpoint probe failed: {tail(work / 'out.err')}")
    result: dict[str, Any] = json.loads((work / "out").read_text())
    log(f"checkpoint probe, {n} versions at {rate:.0f}/s: {result}")
    return result


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--sizes", default="10000,200000", help="versions in each source, comma-separated")
    ap.add_argument("--versions-per-key", type=int, default=2, help="versions per key (default 2)")
    ap.add_argument(
        "--data-dir",
        default=str(OUT / "scale-seaweed"),
        help="SeaweedFS data directory, kept so that seeded sources are reused (default benchmarks/out/scale-seaweed)",
    )
    ap.add_argument("--note", default="", help="a sentence for RESULTS.md about this run (e.g. why it is noisy)")
    ap.add_argument("--seed-only", action="store_true", help="seed (or check) the sources in --data-dir, then stop")
    ap.add_argument("--no-checkpoint-probe", dest="checkpoint", action="store_false", help="skip the checkpoint probe")
    ap.add_argument("--no-record", dest="record", action="store_false", help="do not append to RESULTS.md")
    ap.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="SIZE=BUCKET",
        help="use BUCKET, seeded beforehand with SIZE versions, as that size's source (not seeded nor checked)",
    )
    ap.add_argument("--dry-runs", type=int, default=3, help="dry runs per size, for the listing's median (default 3)")
    ap.add_argument(
        "--probe-upto",
        type=int,
        default=200_000,
        help="run the checkpoint probe only up to this size (default 200,000)",
    )
