"""The replication emulator (testbed/replicator.py) behaves as S3 replication is documented to.

Each test names the AWS behaviour it checks; the documentation is cited in testbed/replicator.py.
These run on SeaweedFS only: the emulator writes the replica there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from testbed.replicator import COMPLETED, FAILED, PENDING, REPLICA, Replicator, replicator_for
from testbed.store import Store


@pytest.fixture
def repl(seaweed: Store, pair: tuple[str, str]) -> Iterator[Replicator]:
    with replicator_for(seaweed, *pair, lag=0.0) as r:
        yield r


def _client(seaweed: Store, repl: Replicator) -> Any:
    return seaweed.new_client(repl.endpoint_url)


def _status(c: Any, bucket: str, key: str, vid: str | None = None) -> str | None:
    kw = {"VersionId": vid} if vid else {}
    status: str | None = c.head_object(Bucket=bucket, Key=key, **kw).get("ReplicationStatus")
    return status


def test_no_rule_means_no_configuration_and_no_status(seaweed: Store, pair: tuple[str, str], repl: Replicator) -> None:
    """Before the rule: GetBucketReplication answers ReplicationConfigurationNotFoundError; nothing replicates."""
    src, dst = pair
    c = _client(seaweed, repl)
    with pytest.raises(ClientError) as e:
        c.get_bucket_replication(Bucket=src)
    assert e.value.response["Error"]["Code"] == "ReplicationConfigurationNotFoundError"
    vid = c.put_object(Bucket=src, Key="a", Body=b"1")["VersionId"]
    repl.drain()
    assert _status(c, src, "a", vid) is None
    assert seaweed.history(dst) == {}


def test_rule_shape_as_get_bucket_replication_answers(seaweed: Store, pair: tuple[str, str], repl: Replicator) -> None:
    """GetBucketReplication: Role, Rules with ID, Priority, Filter/Prefix, Status, DeleteMarkerReplication,
    Destination with the replica's ARN (current schema: Filter implies Priority and DeleteMarkerReplication)."""
    src, dst = pair
    repl.rule_on(prefix="logs/", delete_markers=False)
    c = _client(seaweed, repl)
    cfg = c.get_bucket_replication(Bucket=src)["ReplicationConfiguration"]
    assert cfg["Role"].startswith("arn:aws:iam::")
    (rule,) = cfg["Rules"]
    assert rule["Filter"] == {"Prefix": "logs/"}
    assert rule["Status"] == "Enabled"
    assert rule["Priority"] == 1
    assert rule["DeleteMarkerReplication"] == {"Status": "Disabled"}
    assert rule["Destination"]["Bucket"] == f"arn:aws:s3:::{dst}"
    with pytest.raises(ClientError):  # the replica itself has no rule
        c.get_bucket_replication(Bucket=dst)
    repl.rule_off()
    with pytest.raises(ClientError):
        c.get_bucket_replication(Bucket=src)


def test_new_versions_go_pending_then_completed_and_the_replica_answers_replica(
    seaweed: Store, pair: tuple[str, str], repl: Replicator
) -> None:
    """Only writes after the rule replicate; their status is PENDING, then COMPLETED; the replica's copy
    answers REPLICA; a version from before the rule, or outside the prefix, answers no status."""
    src, dst = pair
    c = _client(seaweed, repl)
    old = c.put_object(Bucket=src, Key="p/k", Body=b"old")["VersionId"]
    repl.rule_on(prefix="p/")
    repl.pause()
    new = c.put_object(Bucket=src, Key="p/k", Body=b"new")["VersionId"]
    outside = c.put_object(Bucket=src, Key="q/k", Body=b"x")["VersionId"]
    assert _status(c, src, "p/k", new) == PENDING
    assert _status(c, src, "p/k") == PENDING  # the current version, asked without a version ID
    assert c.get_object(Bucket=src, Key="p/k", VersionId=new).get("ReplicationStatus") == PENDING
    assert _status(c, src, "p/k", old) is None
    assert _status(c, src, "q/k", outside) is None
    assert seaweed.history(dst) == {}
    repl.drain()
    assert _status(c, src, "p/k", new) == COMPLETED
    (entry,) = seaweed.history(dst)["p/k"]
    assert c.get_object(Bucket=dst, Key="p/k")["Body"].read() == b"new"
    assert _status(c, dst, "p/k", entry[3]) == REPLICA
    assert _status(c, dst, "p/k") == REPLICA
    # SeaweedFS cannot keep the version ID (S3 does): documented in testbed/replicator.py.
    assert repl.replica_ids[entry[3]] == new


def test_a_version_backfilled_into_the_replica_answers_no_status(
    seaweed: Store, pair: tuple[str, str], repl: Replicator
) -> None:
    """Only what replication wrote is a REPLICA: a copy someone else makes into the replica is not."""
    src, dst = pair
    c = _client(seaweed, repl)
    vid = c.put_object(Bucket=src, Key="k", Body=b"1")["VersionId"]
    repl.rule_on()
    r = c.copy_object(Bucket=dst, Key="k", CopySource={"Bucket": src, "Key": "k", "VersionId": vid})
    assert _status(c, dst, "k", r["VersionId"]) is None


def test_delete_markers_replicate_only_when_the_rule_says_so(
    seaweed: Store, pair: tuple[str, str], repl: Replicator
) -> None:
    """DeleteMarkerReplication Enabled: a DELETE's marker is replicated; Disabled: it is not; a DELETE of a
    given version is never replicated."""
    src, dst = pair
    c = _client(seaweed, repl)
    repl.rule_on(delete_markers=True)
    v = c.put_object(Bucket=src, Key="a", Body=b"1")["VersionId"]
    c.delete_object(Bucket=src, Key="a")
    repl.drain()
    assert [e[0] for e in seaweed.history(dst)["a"]] == [False, True]
    repl.rule_on(delete_markers=False)
    c.put_object(Bucket=src, Key="b", Body=b"1")
    c.delete_object(Bucket=src, Key="b")
    repl.drain()
    assert [e[0] for e in seaweed.history(dst)["b"]] == [False]
    c.delete_object(Bucket=src, Key="a", VersionId=v)  # a permanent delete in the source
    repl.drain()
    assert [e[0] for e in seaweed.history(dst)["a"]] == [False, True]


def test_copies_and_multipart_uploads_into_the_source_replicate(
    seaweed: Store, pair: tuple[str, str], repl: Replicator
) -> None:
    src, dst = pair
    c = _client(seaweed, repl)
    seed = c.put_object(Bucket=src, Key="seed", Body=b"s")["VersionId"]
    repl.rule_on()
    c.copy_object(Bucket=src, Key="copied", CopySource={"Bucket": src, "Key": "seed", "VersionId": seed})
    up = c.create_multipart_upload(Bucket=src, Key="mp")["UploadId"]
    part = c.upload_part(Bucket=src, Key="mp", UploadId=up, PartNumber=1, Body=b"m" * 1024)
    done = c.complete_multipart_upload(
        Bucket=src, Key="mp", UploadId=up, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    )
    repl.drain()
    assert _status(c, src, "mp", done["VersionId"]) == COMPLETED
    h = seaweed.history(dst)
    assert set(h) == {"copied", "mp"}  # not the seed: it was there before the rule


def test_lag_keeps_each_keys_order_and_failures_are_final_until_batch_replication(
    seaweed: Store, pair: tuple[str, str], repl: Replicator
) -> None:
    """Per key, versions replicate in write order, after the lag; FAILED stays FAILED (S3 does not retry it)
    until a Batch Replication job (ReplicationStatus FAILED) replicates it."""
    src, dst = pair
    c = _client(seaweed, repl)
    repl.rule_on(lag=lambda key, vid: 0.6 if key == "slow" else 0.0)
    repl.fail = lambda key, vid: key == "bad"
    t0 = time.time()
    ids = [c.put_object(Bucket=src, Key="slow", Body=str(i).encode())["VersionId"] for i in range(3)]
    bad = c.put_object(Bucket=src, Key="bad", Body=b"b")["VersionId"]
    c.put_object(Bucket=src, Key="fast", Body=b"f")
    time.sleep(0.3)
    assert _status(c, src, "slow", ids[0]) == PENDING
    assert "fast" in seaweed.history(dst)
    repl.drain()
    assert all(repl.versions[v].replicated_at - t0 >= 0.6 for v in ids)
    assert [repl.versions[v].replicated_at for v in ids] == sorted(repl.versions[v].replicated_at for v in ids)
    body = [c.get_object(Bucket=dst, Key="slow", VersionId=e[3])["Body"].read() for e in seaweed.history(dst)["slow"]]
    assert body == [b"0", b"1", b"2"]
    assert _status(c, src, "bad", bad) == FAILED
    assert "bad" not in seaweed.history(dst)
    repl.fail = None
    repl.drain()
    assert _status(c, src, "bad", bad) == FAILED
    assert repl.batch_replicate_failed() == 1
    assert _status(c, src, "bad", bad) == COMPLETED
    assert "bad" in seaweed.history(dst)


def test_listings_show_no_replication_status_and_requests_are_counted(
    seaweed: Store, pair: tuple[str, str], repl: Replicator
) -> None:
    """ListObjectVersions has no replication status field; the proxy counts each request by operation."""
    src, _dst = pair
    c = _client(seaweed, repl)
    repl.rule_on()
    c.put_object(Bucket=src, Key="a", Body=b"1")
    repl.drain()
    bodies: list[bytes] = []
    c.meta.events.register(
        "before-parse.s3.ListObjectVersions", lambda response_dict, **_: bodies.append(response_dict["body"])
    )
    c.list_object_versions(Bucket=src)
    assert b"Replication" not in bodies[0]
    assert repl.stats["PutObject:source"] == 1
    assert repl.stats["ListObjectVersions:source"] == 1
