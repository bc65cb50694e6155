"""The test bed: the local servers and emulators that the tests (tests/) and the benchmarks (benchmarks/) share.

Nothing here is shipped (the wheel holds backfill/ only) and nothing here imports
tests/ or benchmarks/. What lives here:

    servers.py   SeaweedFS (`weed mini`) and moto (server mode) on loopback ports, as context
                 managers yielding a `Store`; IDENTITIES, SeaweedFS's scoped users
    store.py     `Store` (a server, its admin boto3 client, the CLI's environment) with the
                 independent history oracle; `run_cli`/`start_cli` (the CLI in a subprocess),
                 `shape`, `copied_versions`, `assert_exact_replica`, `s3_client`
    seeds.py     seeded bucket contents used by several test modules
    proxy.py     the latency and fault-injecting HTTP proxy (`Proxy`, `ThreadedProxy`,
                 `python -m testbed.proxy`), built on faults.py (the kinds, the seeded
                 decider, S3's error answers), framing.py (HTTP/1.1 heads and bodies)
                 and relay.py (the no-fault byte relay with delay)
    torture.py   the crash-resume torture (tests/test_torture.py at CI's size,
                 benchmarks/torture.py at any size)

Emulators of AWS behaviour that neither server shows belong here too, one module
each, saying which behaviour they stand for and citing the AWS documentation.

A test gets a server from the fixtures of tests/conftest.py (thin wrappers over
servers.py) and imports the rest directly:

    from testbed.faults import Fault
    from testbed.proxy import ThreadedProxy
    from testbed.store import Store, shape

    def test_x(seaweed: Store, manifest: str) -> None:
        src, dst = seaweed.buckets()
        with ThreadedProxy(seaweed.endpoint, faults=[Fault("slowdown", 0.05)], seed=1) as proxy:
            r = seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest,
                            env={"AWS_ENDPOINT_URL": proxy.endpoint_url})
        assert shape(seaweed.history(src)) == shape(seaweed.history(dst))

A benchmark starts a server itself (`with seaweedfs(path) as store:`) or runs the
proxy in its own process (`python -m testbed.proxy --upstream URL --rtt-ms 20`).
Run from the repository's root (pytest and `python -m benchmarks` both do), which
puts testbed/ on the import path.
"""

import os

# botocore sends `Expect: 100-continue` with a PUT of an empty body too; SeaweedFS (Go's net/http)
# answers such a request with its final response and no interim 100, and botocore then reads the
# next response on that pooled connection wrongly: the next request stalls for the read timeout
# (60 s) and is sent again (boto/botocore#3755, #3124). Opting out of the header for empty bodies
# (boto/botocore#3123) spares the test bed's own clients (seeding, the oracle, the emulators) the
# stall and the repeated write. Not passed to the CLI under test (testbed/store.py drops BOTO_*),
# which never PUTs an empty body.
os.environ.setdefault("BOTO_EXPERIMENTAL__NO_EMPTY_CONTINUE", "true")
