"""What an outage of a distributed run's state location costs (issue 15).

    python -m benchmarks.state_outages [--rounds 3] [--keys 1500] [--seconds 6] [--lease-seconds 2]

Each round plans a job with its state in s3:// on the same SeaweedFS as the buckets (the replica's
endpoint reaches it, the usual case), starts two `run-shards` workers (index 0 and 1 of 2), and
kills the server with SIGKILL for `--seconds` once 300 versions are in the replica, then starts it
again on the same ports and data (testbed.outage). With the lease shorter than the outage, every
lease lapses meanwhile and is re-validated by its holder's renewal before copying goes on. Printed
per round: the workers' exit codes and the seconds from the server's return to the next object in
the replica (polled every 50 ms; there is no manifest file to watch in a distributed run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from backfill.seaweed import seaweed_server
from testbed.outage import Outage, Outages
from testbed.seeds import seed_many
from testbed.store import Store, start_cli
from testbed.tls import plain_store


def objects(s: Store, bucket: str) -> int:
    n, token = 0, None
    while True:
        r = s.client.list_objects_v2(Bucket=bucket, **({"ContinuationToken": token} if token else {}))
        n += int(r.get("KeyCount", 0))
        if not r.get("IsTruncated"):
            return n
        token = r["NextContinuationToken"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keys", type=int, default=1500)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--lease-seconds", default="2")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="state-outages-") as tmp, seaweed_server(Path(tmp) / "sw") as server:
        s = plain_store(server.info)
        src, _ = s.buckets()
        ctl, _ = s.buckets(versioned=False, dest_versioned=False)
        seed_many(s, src, a.keys)
        costs: list[float] = []
        for rnd in range(a.rounds):
            dst = s.buckets()[1]
            state = f"s3://{ctl}/run{rnd}/"
            s.run("copy", f"s3://{src}", f"s3://{dst}", "--state", state, "--shards", "4", "--plan-only")
            member = ["run-shards", "--state", state, "--count", "2", "--parallel", "2", "--concurrency", "16"]
            member += ["--max-rps", "100", "--lease-seconds", a.lease_seconds, "--checkpoint-seconds", "0.5"]

            def started(dst: str = dst) -> bool:
                try:
                    return objects(s, dst) >= 300
                except Exception:  # the server is busy: look again
                    return False

            with Outages(server, [Outage(started, seconds=a.seconds)]) as o:
                procs = [start_cli(s, *member, "--index", str(i)) for i in range(2)]
                o.wait()
                h = o.log[0]
                before = objects(s, dst)
                while objects(s, dst) <= before and time.time() - h.ended < 120:
                    time.sleep(0.05)
                cost = time.time() - h.ended
                codes = [p.wait(timeout=300) for p in procs]
            costs.append(cost)
            print(
                json.dumps({"round": rnd, "codes": codes, "fired": h.fired, "next_object_s": round(cost, 2)}),
                flush=True,
            )
        print(f"state location outage cost: n={len(costs)} median={statistics.median(costs):.2f} max={max(costs):.2f}")


if __name__ == "__main__":
    main()
