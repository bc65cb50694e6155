"""What SeaweedFS's listing shows after a SIGKILL that falls among CopyObjects, and a restart.

    python -m benchmarks.crash_consistency [--rounds 10] [--writers 24]

Each round, `--writers` threads copy source versions one after another into a key of their own
in a versioned replica bucket; the server is killed (SIGKILL) at a random moment and each writer
stops at its first failure, so that a key's history ends at the crash: the versions whose copy was
acknowledged, and perhaps the one in flight. After the restart it counts, per key: whether the
copy in flight landed (a version nobody was told about), whether the newest listed entry carries
IsLatest, whether the newest is explained (the one in flight or the last acknowledged), two
unknown versions, and whether the listing changes over the next 5 s (versions appearing late).

Seen on SeaweedFS 4.48 (this machine, December 2026): 23 of 240 in-flight copies landed; in 15
of them the newest listed version (the one in flight) was not marked IsLatest — the previous
version was — while the listing's order stayed right; no key had two unknown versions and no
listing changed after the restart. backfill reads a key's history from the listing's order,
never from IsLatest, so its lost-write checks find such a copy.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from backfill.seaweed import LocalS3, seaweed_server


def _client(info: LocalS3) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=info.endpoint_url,
        aws_access_key_id=info.access_key,
        aws_secret_access_key=info.secret_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=10
        ),
    )


def _listing(c: Any, key: str) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    for page in c.get_paginator("list_object_versions").paginate(Bucket="dst", Prefix=key):
        out += [(e["VersionId"], bool(e["IsLatest"])) for e in page.get("Versions", []) if e["Key"] == key]
    return out


def _writer(info: LocalS3, key: str, sources: list[str], stop: threading.Event, acked: dict[str, list[str]]) -> None:
    """Copy source versions into `key` one after another until `stop`, or until the first failure (the crash)."""
    cl = _client(info)
    acked[key] = []
    while not stop.is_set():
        i = random.randrange(len(sources))
        source = {"Bucket": "src", "Key": f"s{i}", "VersionId": sources[i]}
        try:
            acked[key].append(cl.copy_object(Bucket="dst", Key=key, CopySource=source)["VersionId"])
        except Exception:  # the crash: this key's history ends here
            return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--writers", type=int, default=24)
    a = ap.parse_args()
    totals = dict.fromkeys(
        ("keys", "inflight_landed", "newest_not_latest", "newest_unexplained", "two_unknown", "changed_later"), 0
    )
    with tempfile.TemporaryDirectory() as tmp, seaweed_server(Path(tmp) / "seaweed") as server:
        c = _client(server.info)
        for b in ("src", "dst"):
            c.create_bucket(Bucket=b)
            c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
        sources = [c.put_object(Bucket="src", Key=f"s{i}", Body=f"body {i}".encode())["VersionId"] for i in range(100)]
        for rnd in range(a.rounds):
            stop = threading.Event()
            acked: dict[str, list[str]] = {}

            threads = [
                threading.Thread(target=_writer, args=(server.info, f"r{rnd}/w{w}", sources, stop, acked))
                for w in range(a.writers)
            ]
            for t in threads:
                t.start()
            time.sleep(random.uniform(0.5, 2))
            server.kill()
            stop.set()
            for t in threads:
                t.join()
            time.sleep(1)
            server.start()
            first = {k: _listing(c, k) for k in acked}
            time.sleep(5)
            for k, entries in first.items():
                ids = [v for v, _ in entries]
                unknown = [v for v in ids if v not in acked[k]]
                totals["keys"] += 1
                totals["inflight_landed"] += bool(unknown)
                totals["two_unknown"] += len(unknown) > 1
                totals["newest_not_latest"] += bool(entries) and not entries[0][1]
                explained = not ids or ids[0] in unknown or (bool(acked[k]) and ids[0] == acked[k][-1])
                totals["newest_unexplained"] += not explained
                totals["changed_later"] += _listing(c, k) != entries
            print(json.dumps({"round": rnd, **totals}), flush=True)


if __name__ == "__main__":
    main()
