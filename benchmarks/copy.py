"""One `backfill copy` of N small objects on a local SeaweedFS (`python -m benchmarks run` compares it with peers).

    python -m benchmarks.copy [--objects 5000] [--versions-per-key 1] [--concurrency 64] [--versions latest|all]
                              [--verify]

The server is pinned to CPU 0 and the client to CPU 1 (taskset), as TESTBED.md
advises on this 2-core machine. Prints wall time, versions/s, the client's CPU
time per copy and its peak RSS (os.wait4: that process's own), and with --verify
the same for a `backfill verify` of the result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from backfill.seaweed import local_s3
from benchmarks.common import (
    CLIENT_CPU,
    SERVER_CPU,
    Shape,
    can_pin,
    compile_backfill,
    make_bucket,
    measure,
    pinned,
    s3_client,
    seed,
    tail,
)
from benchmarks.peers import s5cmd_binary


def main() -> None:
    compile_backfill()
    ap = argparse.ArgumentParser(prog="python -m benchmarks.copy", description=__doc__)
    ap.add_argument("--objects", type=int, default=5000)
    ap.add_argument("--versions-per-key", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--versions", default="latest")
    ap.add_argument("--verify", action="store_true", help="also time a verify and its peak RSS")
    args = ap.parse_args()
    pin = can_pin()
    with tempfile.TemporaryDirectory() as tmp, local_s3(Path(tmp) / "sw", cpu=SERVER_CPU if pin else None) as s:
        c = s3_client(s.endpoint_url, s.access_key, s.secret_key)
        shape = Shape(args.objects, args.versions_per_key, markers=False)
        seed(c, s.endpoint_url, s.env(), "bench-src", shape, Path(tmp), s5cmd_binary())
        make_bucket(c, "bench-dst")
        print(f"seeded {shape.describe()}", file=sys.stderr)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | s.env()
        env |= {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
        manifest = Path(tmp) / "m.db"
        cmd = [
            sys.executable,
            "-m",
            "backfill",
            "copy",
            "s3://bench-src",
            "s3://bench-dst",
            "--manifest",
            str(manifest),
        ]
        cmd += ["--concurrency", str(args.concurrency), "--versions", args.versions, "--json"]
        m = measure(pinned(cmd, CLIENT_CPU), env=env, log=Path(tmp) / "copy.out")
        if m.code != 0:
            sys.exit(f"backfill failed ({m.code}): {tail(Path(tmp) / 'copy.out.err')}")
        summary = json.loads((Path(tmp) / "copy.out").read_text())
        copied = summary["this_run"]["copied"]
        expected = args.objects * (args.versions_per_key if args.versions == "all" else 1)
        assert copied == expected, (copied, expected)
        result = {
            "objects": args.objects,
            "versions_copied": copied,
            "concurrency": args.concurrency,
            "wall_seconds": round(m.wall, 2),
            "versions_per_second": round(copied / m.wall, 1),
            "client_cpu_ms_per_copy": round(m.cpu * 1000 / copied, 3),
            "client_peak_rss_mib": round(m.max_rss_kib / 1024, 1),
            "first_copy_seconds": summary["this_run"]["first_copy_seconds"],
            "manifest_bytes_per_version": round(sum(f.stat().st_size for f in Path(tmp).glob("m.db*")) / copied, 1),
            "pinned": pin,
        }
        if args.verify:
            vcmd = [sys.executable, "-m", "backfill", "verify", "s3://bench-src", "s3://bench-dst", "--json"]
            if args.versions == "latest":
                vcmd += ["--versions", "latest"]
            v = measure(pinned(vcmd, CLIENT_CPU), env=env, log=Path(tmp) / "verify.out")
            assert v.code == 0, tail(Path(tmp) / "verify.out.err")
            result["verify_seconds"] = round(v.wall, 2)
            result["verify_peak_rss_mib"] = round(v.max_rss_kib / 1024, 1)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
