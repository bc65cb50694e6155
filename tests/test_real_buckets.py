"""What real buckets do that the local servers do not show, and backfill must handle (issue 14).

Each test names the AWS behaviour it stands for; the emulations (testbed/kms_etags.py,
testbed/requester_pays.py) cite the documentation they follow, and tests/test_emulations.py checks them.
Facts about what SeaweedFS 4.48 and moto 5.2.5 implement: docs/testbed-facts.md.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.faults import Fault
from testbed.kms_etags import KEY_ARN, KmsEtagProxy
from testbed.proxy import ThreadedProxy
from testbed.requester_pays import RequesterPaysProxy
from testbed.s3http import Keys, Threaded
from testbed.seeds import seed_histories
from testbed.store import Store, shape
from testbed.torture import Seeded, check, seed, torture

MiB = 1024 * 1024


def via(store: Store, endpoint: str) -> Store:
    """The same store reached through a proxy by the CLI; `store.client` (the oracle) still goes direct."""
    return dataclasses.replace(store, env={**store.env, "AWS_ENDPOINT_URL": endpoint})


def _creds(store: Store) -> Keys:
    return {"access_key": store.env["AWS_ACCESS_KEY_ID"], "secret_key": store.env["AWS_SECRET_ACCESS_KEY"]}


@pytest.fixture
def kms(seaweed: Store) -> Iterator[Threaded[KmsEtagProxy]]:
    """Both buckets of a test behind the SSE-KMS ETag emulation (checksums passed through)."""
    with Threaded(KmsEtagProxy(seaweed.endpoint, **_creds(seaweed))) as p:
        yield p


def _no_duplicates_no_losses(store: Store, src: str, dst: str) -> None:
    source, replica = store.history(src), store.history(dst)
    missing = {k: len(v) - len(replica.get(k, [])) for k, v in source.items() if len(replica.get(k, [])) < len(v)}
    extra = {k: len(v) - len(source.get(k, [])) for k, v in replica.items() if len(v) > len(source.get(k, []))}
    assert not missing, f"missing versions: {sorted(missing.items())[:5]}"
    assert not extra, f"duplicated versions: {sorted(extra.items())[:5]}"
    assert shape(source, etags=False) == shape(replica, etags=False)


def _verify(store: Store, src: str, dst: str, *args: str) -> dict[str, object]:
    r = store.run("verify", f"s3://{src}", f"s3://{dst}", "--json", *args)
    assert "Traceback" not in r.stderr, r.stderr
    out: dict[str, object] = json.loads(r.stdout)
    out["code"] = r.code
    return out


# --- exactly once when ETags are not MD5s (SSE-KMS / SSE-C) -------------------------------------------


def seed_with_checksums(store: Store, bucket: str, keys: int, big: int, rng_seed: int) -> Seeded:
    """torture.seed's bucket, with its large versions uploaded as today's AWS stores them: with a full-object
    checksum (S3 gives every new object one, CRC64NVME by default; the SDK sends CRC32, which SeaweedFS keeps),
    multipart ones included. torture.seed's own multipart uploads carry none (SeaweedFS adds no default)."""
    out = seed(store, bucket, keys, 0, rng_seed)
    c = store.client
    for i in range(big):
        key = f"d{(i * 3) % 8}/big-{i:02d}"
        for n in range(1 + i % 2):
            data = bytes([n + 65 + i]) * ((6 + (i + n) % 6) * MiB)
            if i % 2:
                c.put_object(Bucket=bucket, Key=key, Body=data)
            else:
                up = c.create_multipart_upload(
                    Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT"
                )
                parts = []
                for number, start in enumerate(range(0, len(data), 5 * MiB), start=1):
                    r = c.upload_part(
                        Bucket=bucket,
                        Key=key,
                        UploadId=up["UploadId"],
                        PartNumber=number,
                        Body=data[start : start + 5 * MiB],
                        ChecksumAlgorithm="CRC32",
                    )
                    parts.append({"ETag": r["ETag"], "PartNumber": number, "ChecksumCRC32": r["ChecksumCRC32"]})
                c.complete_multipart_upload(
                    Bucket=bucket,
                    Key=key,
                    UploadId=up["UploadId"],
                    MultipartUpload={"Parts": parts},
                    ChecksumType="FULL_OBJECT",
                )
            out.versions += 1
        out.multipart_keys.add(key)
    return out


def test_kills_under_kms_etags_lose_and_duplicate_nothing(
    seaweed: Store, kms: Threaded[KmsEtagProxy], manifest: str
) -> None:
    """The SIGKILL torture of test_torture.py (10 kills of a 600-key bucket here; 20 of a larger one there),
    with both buckets showing SSE-KMS ETags: a copy that a kill left unrecorded is recognised without ETags
    (by checksum), never copied twice; verify is clean without --deep (checksums decide)."""
    src, dst = seaweed.buckets()
    seeded = seed_with_checksums(seaweed, src, 600, 8, 2026)
    assert (
        seaweed.client.head_object(Bucket=src, Key="d0/big-00", ChecksumMode="ENABLED")["ChecksumType"] == "FULL_OBJECT"
    )
    bed = via(seaweed, kms.endpoint_url)
    outcome = torture(bed, src, dst, manifest, total=seeded.versions, kills=10, sigints=2, seed=2026, log=print)
    killed = [s for s in outcome.stops if s.kind != "sigint" and s.exit_code != 0]
    assert len(killed) == 10
    check(bed, src, dst, manifest, seeded, outcome)  # zero missing, zero duplicated, verify --deep clean
    v = _verify(bed, src, dst, "--manifest", manifest)
    assert v["code"] == 0, v
    by = v["identical_by"]
    assert isinstance(by, dict) and "etag" not in by and "content compared" not in by, by
    assert any(k.startswith("checksum") for k in by), by


def test_lost_answers_under_kms_etags_are_found_not_sent_twice(
    seaweed: Store, kms: Threaded[KmsEtagProxy], manifest: str
) -> None:
    """test_faults.py's fault mix between backfill and the SSE-KMS emulation: answers lost after the server
    did the copy are looked for in the replica and recognised without ETags."""
    src, dst = seaweed.buckets()
    counts = seed_histories(seaweed, src, 300, seed=3)
    mix = [
        Fault("slowdown", 0.03),
        Fault("reset", 0.01),
        Fault("reset_after", 0.04),  # forwarded: the server carried it out, the client never hears
        Fault("stall", 0.01, seconds=3.0),
        Fault("error_200", 0.01),
    ]
    with ThreadedProxy(kms.endpoint_url, faults=mix, seed=11) as faults:
        r = via(seaweed, faults.endpoint_url).run(
            "copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json", "--read-timeout", "2"
        )
        stats = faults.stats
    assert r.code == 0, r.stderr
    lost = stats.get("reset_after:CopyObject", 0) + stats.get("reset_after:DeleteObject", 0)
    assert lost > 0, stats
    summary = json.loads(r.stdout)
    assert summary["job"]["copied"] == counts["versions"] + counts["delete_markers"]
    assert summary["this_run"]["writes_found_landed"] >= lost
    _no_duplicates_no_losses(seaweed, src, dst)
    v = _verify(via(seaweed, kms.endpoint_url), src, dst, "--manifest", manifest)
    assert v["code"] == 0, v


def test_without_checksums_lost_answers_and_crashes_are_recognised_by_order_size_and_time(
    seaweed: Store, manifest: str
) -> None:
    """Old SSE-KMS objects have neither MD5 ETags nor checksums (checksums=False). A lost answer and a
    crash that left every outcome unrecorded are still recognised — by position in the key's history,
    kind, size and time (the rule in README's "What backfill guarantees") — and verify says
    unverifiable, never identical, until --deep compares content."""
    src, dst = seaweed.buckets()
    counts = seed_histories(seaweed, src, 150, seed=5)
    total = counts["versions"] + counts["delete_markers"]
    with Threaded(KmsEtagProxy(seaweed.endpoint, **_creds(seaweed), checksums=False)) as old:
        lost = [Fault("reset_after", 0.08, op="CopyObject"), Fault("reset_after", 0.08, op="DeleteObject")]
        with ThreadedProxy(old.endpoint_url, faults=lost, seed=5) as faults:
            r = via(seaweed, faults.endpoint_url).run(
                "copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json"
            )
            stats = faults.stats
        assert r.code == 0, r.stderr
        assert stats.get("reset_after:CopyObject", 0) > 0, stats
        _no_duplicates_no_losses(seaweed, src, dst)
        # As if the run had died before committing any outcome: every version pending again.
        with sqlite3.connect(manifest) as db:
            db.execute("UPDATE version SET state = 0, rvid = NULL")
            db.execute("UPDATE job SET value = '1' WHERE name = 'clean'")  # nothing in flight: no settling
        r = via(seaweed, old.endpoint_url).run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json")
        assert r.code == 0, r.stderr
        again = json.loads(r.stdout)["this_run"]
        assert again["copied"] == 0 and again["recovered_after_crash"] == total, again
        _no_duplicates_no_losses(seaweed, src, dst)
        v = _verify(via(seaweed, old.endpoint_url), src, dst, "--manifest", manifest)
        diffs = v["differences"]
        assert isinstance(diffs, dict)
        assert {k for k, n in diffs.items() if n} <= {"unverifiable"}, v
        deep = _verify(via(seaweed, old.endpoint_url), src, dst, "--manifest", manifest, "--deep")
        assert deep["code"] == 0, deep


# --- Requester Pays ------------------------------------------------------------------------------------


@pytest.mark.parametrize("http", ["lean", "botocore"])
def test_requester_pays_source(seaweed: Store, manifest: str, http: str) -> None:
    """A Requester Pays source read by another account: without `x-amz-request-payer: requester` S3
    answers 403 to everything (testbed/requester_pays.py); the run stops with one line naming
    --request-payer, and with the option every request carries the header (listing, HEAD, copy, parts,
    verify)."""
    src, dst = seaweed.buckets()
    seed_histories(seaweed, src, 40, seed=9)
    seaweed.client.put_object(Bucket=src, Key="big", Body=b"R" * (6 * MiB))  # UploadPartCopy and HEAD parts
    with Threaded(RequesterPaysProxy(seaweed.endpoint, **_creds(seaweed), buckets={src})) as rp:
        bed = via(seaweed, rp.endpoint_url)
        args = ["copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--http", http]
        args += ["--multipart-threshold", "5MiB", "--part-size", "5MiB"]
        r = bed.run(*args)
        assert r.code == 2, r.stderr
        assert "Traceback" not in r.stderr
        errors = [line for line in r.stderr.splitlines() if line.startswith("backfill: error:")]
        assert len(errors) == 1 and "--request-payer requester" in errors[0], r.stderr
        assert seaweed.history(dst) == {}
        refused = sum(rp.proxy.refused.values())
        r = bed.run(*args, "--request-payer", "requester")
        assert r.code == 0, r.stderr
        assert sum(rp.proxy.refused.values()) == refused, rp.proxy.refused  # not one request without it
        assert rp.proxy.charged > 0
        assert shape(seaweed.history(src), etags=False) == shape(seaweed.history(dst), etags=False)
        v = _verify(bed, src, dst, "--manifest", manifest, "--request-payer", "requester")
        assert v["code"] == 0, v
        assert sum(rp.proxy.refused.values()) == refused, rp.proxy.refused


# --- Object Lock (moto implements it) -----------------------------------------------------------------


def _locked_buckets(moto: Store, *, replica_locked: bool) -> tuple[str, str]:
    n = time.monotonic_ns()
    src, dst = f"lock-src-{os.getpid()}-{n}", f"lock-dst-{os.getpid()}-{n}"
    moto.client.create_bucket(Bucket=src, ObjectLockEnabledForBucket=True)
    if replica_locked:
        moto.client.create_bucket(Bucket=dst, ObjectLockEnabledForBucket=True)
    else:
        moto.client.create_bucket(Bucket=dst)
    moto.client.put_bucket_versioning(Bucket=dst, VersioningConfiguration={"Status": "Enabled"})
    return src, dst


def test_locked_source_into_a_replica_without_object_lock_is_refused(moto: Store, manifest: str) -> None:
    """S3 refuses a locked version's retention in a bucket without Object Lock (replication too needs Object
    Lock on the destination: DstBucketObjectLockConfigMissing); the preflight says so in one line."""
    src, dst = _locked_buckets(moto, replica_locked=False)
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    moto.client.put_object(Bucket=src, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)
    r = moto.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest)
    assert r.code == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("backfill: error:")]
    assert len(errors) == 1 and "Object Lock" in errors[0], r.stderr
    assert moto.history(dst) == {}


def test_retention_and_legal_hold_carried_and_a_past_retention_dropped(moto: Store, manifest: str) -> None:
    """GOVERNANCE and COMPLIANCE retention and legal holds are carried; a retain-until date already in the
    past is not sent (S3 refuses it: "The retain until date must be in the future!", InvalidArgument;
    moto does not check), its legal hold is, and the run says how many retentions had expired."""
    src, dst = _locked_buckets(moto, replica_locked=True)
    c = moto.client
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    future, past = now + datetime.timedelta(days=2), now - datetime.timedelta(days=2)
    c.put_object(Bucket=src, Key="gov", Body=b"g", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=future)
    c.put_object(Bucket=src, Key="comp", Body=b"c", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=future)
    c.put_object(Bucket=src, Key="hold", Body=b"h", ObjectLockLegalHoldStatus="ON")
    c.put_object(
        Bucket=src,
        Key="expired",
        Body=b"e",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=past,
        ObjectLockLegalHoldStatus="ON",
    )
    c.put_object(Bucket=src, Key="plain", Body=b"p")
    r = moto.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json")
    assert r.code == 0, r.stderr
    assert "expired" in r.stderr and "retention" in r.stderr, r.stderr
    head = {k: c.head_object(Bucket=dst, Key=k) for k in ("gov", "comp", "hold", "expired", "plain")}
    assert head["gov"]["ObjectLockMode"] == "GOVERNANCE"
    assert head["gov"]["ObjectLockRetainUntilDate"] == future
    assert head["comp"]["ObjectLockMode"] == "COMPLIANCE"
    assert head["hold"].get("ObjectLockLegalHoldStatus") == "ON"
    assert "ObjectLockMode" not in head["expired"] and head["expired"].get("ObjectLockLegalHoldStatus") == "ON"
    assert "ObjectLockMode" not in head["plain"]
    for k in ("gov", "hold", "expired"):  # let the session's later tests delete what they like
        vid = head[k]["VersionId"]
        c.put_object_legal_hold(Bucket=dst, Key=k, VersionId=vid, LegalHold={"Status": "OFF"})


# --- archived versions ---------------------------------------------------------------------------------


def test_archived_versions_are_retried_by_a_later_run_and_counted_in_status(moto: Store, manifest: str) -> None:
    """A GLACIER version cannot be copied until restored (ObjectNotInActiveTierError / InvalidObjectState;
    moto refuses such a copy as S3 does, and implements RestoreObject): it is skipped with its reason,
    `status` counts it as archived, and the next run after the restore copies it."""
    src, dst = moto.buckets()
    c = moto.client
    c.put_object(Bucket=src, Key="cold", Body=b"frozen", StorageClass="GLACIER")
    c.put_object(Bucket=src, Key="warm", Body=b"here")
    args = ["copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json"]
    r = moto.run(*args)
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["job"]["skipped"] == 1
    s = moto.run("status", "--manifest", manifest, "--json")
    assert json.loads(s.stdout)["archived"] == 1, s.stdout
    c.restore_object(Bucket=src, Key="cold", RestoreRequest={"Days": 1})
    r = moto.run(*args)
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["this_run"]["copied"] == 1, r.stdout
    s = moto.run("status", "--manifest", manifest, "--json")
    assert json.loads(s.stdout)["archived"] == 0, s.stdout
    assert set(moto.history(dst)) == {"cold", "warm"}


ARCHIVED_WHY = "archived (GLACIER), not restored: restore it, then run again"


def _late_copy(moto: Store, manifest: str) -> tuple[str, str, list[str]]:
    """A key whose old version was archived when the first run copied its newer one, restored, then copied
    by a second run: above the newer one. The replica's history of the key, as source version sizes."""
    src, dst = moto.buckets()
    c = moto.client
    cold = c.put_object(Bucket=src, Key="k", Body=b"old", StorageClass="GLACIER")["VersionId"]
    c.put_object(Bucket=src, Key="k", Body=b"newest")
    args = ["copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json"]
    r = moto.run(*args)
    assert r.code == 0 and json.loads(r.stdout)["job"]["skipped"] == 1, r.stdout + r.stderr
    _restore_version(src, "k", cold)
    r = moto.run(*args)
    assert r.code == 0, r.stderr
    this_run = json.loads(r.stdout)["this_run"]
    assert (this_run["copied"], this_run["current_fixes"]) == (1, 1), this_run
    return src, dst, args


def _restore_version(bucket: str, key: str, version_id: str) -> None:
    """RestoreObject of one version, as S3 does it (`versionId`: "the version of the object to restore");
    moto 5.2 restores the key's current version whatever the VersionId, so the test restores the archived
    version in moto's backend (the server runs in this process)."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    version = s3_backends[DEFAULT_ACCOUNT_ID]["global"].get_object(bucket, key, version_id=version_id)
    assert version is not None
    version.restore(1)


def _sizes(moto: Store, bucket: str) -> list[int]:
    return [size for _dm, size, _etag, _vid in moto.history(bucket)["k"]]


def test_a_version_copied_late_is_followed_by_a_final_copy_of_the_newest(moto: Store, manifest: str) -> None:
    """A version copied by a later run (restored from GLACIER here; SSE-C given its key alike) lands above its
    key's newer versions: the key gets one final copy of its newest version, so that the replica's current
    version is the source's. verify then finds the late version out of order (history_differs, expected)
    and nothing else. The late copy's outcome is recorded in one transaction with its fix: a crash before
    that transaction leaves the late copy unrecorded, and the next run finds it in the replica (not copied
    twice), then finds the fix if it had landed (not made twice), or makes it."""
    src, dst, args = _late_copy(moto, manifest)
    assert _sizes(moto, dst) == [6, 3, 6]
    v = _verify(moto, src, dst, "--manifest", manifest)
    diffs = v["differences"]
    assert isinstance(diffs, dict) and {k: n for k, n in diffs.items() if n} == {"history_differs": 1}, v
    s = json.loads(moto.run("status", "--manifest", manifest, "--json").stdout)
    assert s["current_fixes"] == 1, s

    def crash_before_the_record() -> None:
        with sqlite3.connect(manifest) as db:
            db.execute(
                "UPDATE version SET state = 3, rvid = NULL, why = ? WHERE key = 'k' AND seq = 0", (ARCHIVED_WHY,)
            )
            db.execute("DELETE FROM current_fix")
            db.execute("UPDATE job SET value = '1' WHERE name = 'clean'")  # nothing in flight: no settling

    crash_before_the_record()  # the fix had landed
    r = moto.run(*args)
    assert r.code == 0, r.stderr
    this_run = json.loads(r.stdout)["this_run"]
    assert (this_run["copied"], this_run["recovered_after_crash"], this_run["current_fixes"]) == (0, 1, 1), this_run
    assert _sizes(moto, dst) == [6, 3, 6]

    crash_before_the_record()  # the fix had not been made
    fix = moto.history(dst)["k"][-1][3]
    moto.client.delete_object(Bucket=dst, Key="k", VersionId=fix)
    r = moto.run(*args)
    assert r.code == 0, r.stderr
    this_run = json.loads(r.stdout)["this_run"]
    assert (this_run["copied"], this_run["recovered_after_crash"], this_run["current_fixes"]) == (0, 1, 1), this_run
    assert _sizes(moto, dst) == [6, 3, 6]
    v = _verify(moto, src, dst, "--manifest", manifest)
    diffs = v["differences"]
    assert isinstance(diffs, dict) and {k: n for k, n in diffs.items() if n} == {"history_differs": 1}, v
    again = json.loads(moto.run(*args).stdout)["this_run"]  # settled: nothing more to do
    assert (again["copied"], again["current_fixes"]) == (0, 0), again


# --- checksums -------------------------------------------------------------------------------------------


def test_multipart_copies_get_the_sources_full_object_checksum(store: Store, manifest: str) -> None:
    """A multipart copy asks CreateMultipartUpload for the source's checksum algorithm (full object), so
    the replica has a checksum equal to the source's and verify proves the pair identical without --deep
    (their ETags differ on SeaweedFS, and under SSE-KMS anywhere). A single-part copy keeps the source's
    algorithm, as S3's CopyObject does by default."""
    src, dst = store.buckets()
    c = store.client
    c.put_object(Bucket=src, Key="big", Body=os.urandom(6 * MiB))  # the SDK sends a CRC32 (full object)
    c.put_object(Bucket=src, Key="small", Body=b"s" * 1000, ChecksumAlgorithm="SHA256")
    r = store.run(
        "copy",
        f"s3://{src}",
        f"s3://{dst}",
        "--manifest",
        manifest,
        "--multipart-threshold",
        "5MiB",
        "--part-size",
        "5MiB",
    )
    assert r.code == 0, r.stderr
    s_big = c.head_object(Bucket=src, Key="big", ChecksumMode="ENABLED")
    d_big = c.head_object(Bucket=dst, Key="big", ChecksumMode="ENABLED")
    assert d_big["ETag"].endswith('-2"')  # really a multipart copy
    assert d_big.get("ChecksumCRC32") == s_big["ChecksumCRC32"], d_big
    assert d_big.get("ChecksumType") == "FULL_OBJECT", d_big
    s_small = c.head_object(Bucket=src, Key="small", ChecksumMode="ENABLED")
    d_small = c.head_object(Bucket=dst, Key="small", ChecksumMode="ENABLED")
    assert d_small.get("ChecksumSHA256") == s_small["ChecksumSHA256"], d_small
    v = _verify(store, src, dst, "--manifest", manifest)
    assert v["code"] == 0, v
    assert "content compared" not in v["identical_by"]  # type: ignore[operator]


# --- SSE-C (SeaweedFS implements it: HEAD 400, GET/copy refused without the key) ---------------------------


def _ssec_key(tmp_path: Path, name: str) -> tuple[Path, bytes]:
    key = os.urandom(32)
    path = tmp_path / name
    path.write_bytes(key)
    path.chmod(0o600)
    return path, key


def test_sse_c_versions_skipped_without_the_key_and_copied_with_it(
    seaweed: Store, manifest: str, tmp_path: Path
) -> None:
    """SSE-C: S3 reads a customer-key object only with x-amz-server-side-encryption-customer-* headers
    (x-amz-copy-source-server-side-encryption-customer-* for the source of a copy). Without the key, such a
    version is skipped with its reason and does not block its key's later versions; a later run with
    --source-sse-c-key copies it; --dest-sse-c-key encrypts the replica's copies with another key. Neither
    key appears in any output or in the manifest."""
    src, dst = seaweed.buckets()
    c = seaweed.client
    path, key = _ssec_key(tmp_path, "source.key")
    dpath, dkey = _ssec_key(tmp_path, "replica.key")
    c.put_object(Bucket=src, Key="plain", Body=b"p")
    c.put_object(Bucket=src, Key="mixed", Body=b"secret", SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    c.put_object(Bucket=src, Key="mixed", Body=b"later, plain")
    args = ["copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--json"]
    r = seaweed.run(*args)
    assert r.code == 0, r.stderr
    job = json.loads(r.stdout)["job"]
    assert job["copied"] == 2 and job["skipped"] == 1, job
    s = seaweed.run("status", "--manifest", manifest, "--json")
    assert "--source-sse-c-key" in s.stdout, s.stdout
    r2 = seaweed.run(*args, "--source-sse-c-key", str(path), "--dest-sse-c-key", str(dpath))
    assert r2.code == 0, r2.stderr
    assert json.loads(r2.stdout)["this_run"]["copied"] == 1, r2.stdout
    # The late copy landed above the key's newer version: the key gets one final copy of that newest version,
    # so the replica's current version stays the source's (README, SSE-C).
    assert json.loads(r2.stdout)["job"]["current_fixes"] == 1, r2.stdout
    versions = seaweed.history(dst)["mixed"]
    assert [v[1] for v in versions] == [len(b"later, plain"), len(b"secret"), len(b"later, plain")], versions
    encrypted = next(v for v in versions if v[1] == len(b"secret"))
    got = c.get_object(
        Bucket=dst, Key="mixed", VersionId=encrypted[3], SSECustomerAlgorithm="AES256", SSECustomerKey=dkey
    )
    assert got["Body"].read() == b"secret"
    # verify reads both sides with their keys; the version copied late sits after its successor (README): the
    # history differs there, the current version does not, and the final copy is recognised by the manifest.
    v = _verify(
        seaweed, src, dst, "--manifest", manifest, "--source-sse-c-key", str(path), "--dest-sse-c-key", str(dpath)
    )
    diffs = v["differences"]
    assert isinstance(diffs, dict) and {k: n for k, n in diffs.items() if n} == {"history_differs": 1}, v
    secrets = [base64.b64encode(k).decode() for k in (key, dkey)] + [k.hex() for k in (key, dkey)]
    blob = Path(manifest).read_bytes()
    for out in (r.stdout, r.stderr, r2.stdout, r2.stderr, s.stdout):
        assert not any(x in out for x in secrets)
    assert not any(x.encode() in blob or k in blob for x, k in zip(secrets, [key, dkey, key, dkey], strict=True))


# --- KMS across accounts ---------------------------------------------------------------------------------


def test_a_source_key_the_copying_principal_may_not_use_is_named_before_the_run(seaweed: Store, manifest: str) -> None:
    """SSE-KMS source versions whose key's policy does not grant the replica's principal kms:Decrypt (or
    that use the AWS-managed aws/s3 key): every copy would be refused. The preflight HEADs the first
    versions, tries one ranged GET as the copying principal, and stops with one line naming the key, the
    grant and the aws/s3 case (testbed/kms_etags.py with deny_decrypt stands for the denial)."""
    src, dst = seaweed.buckets()
    seed_histories(seaweed, src, 10, seed=2)
    with Threaded(KmsEtagProxy(seaweed.endpoint, **_creds(seaweed), buckets={src}, deny_decrypt=True)) as kms:
        r = via(seaweed, kms.endpoint_url).run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest)
        assert kms.proxy.denied >= 1
    assert r.code == 2, r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("backfill: error:")]
    assert len(errors) == 1, r.stderr
    assert "kms:Decrypt" in errors[0] and KEY_ARN in errors[0] and "aws/s3" in errors[0], errors[0]
    assert seaweed.history(dst) == {}


def test_copies_are_encrypted_under_the_sse_kms_key_given(moto: Store, manifest: str) -> None:
    """--sse-kms-key-id KEY: every copy (versions of several keys, a multipart one too) is written with
    SSE-KMS under that key, as HEAD of each replica version shows (moto implements KMS keys and keeps the
    key of an SSE-KMS object)."""
    import boto3

    kms = boto3.client(
        "kms",
        endpoint_url=moto.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    key = kms.create_key(Description="replica")["KeyMetadata"]["Arn"]
    src, dst = moto.buckets()
    c = moto.client
    for n in range(2):
        c.put_object(Bucket=src, Key="a", Body=f"a{n}".encode())
    c.put_object(Bucket=src, Key="big", Body=b"B" * (6 * MiB))
    args = ["copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, "--sse-kms-key-id", key]
    r = moto.run(*args, "--multipart-threshold", "5MiB", "--part-size", "5MiB")
    assert r.code == 0, r.stderr
    history = moto.history(dst)
    assert [len(history["a"]), len(history["big"])] == [2, 1]
    assert history["big"][0][2].strip('"').endswith("-2")  # really a multipart copy
    for k, versions in history.items():
        for _dm, _size, _etag, vid in versions:
            head = c.head_object(Bucket=dst, Key=k, VersionId=vid)
            assert head["ServerSideEncryption"] == "aws:kms", (k, head)
            assert head["SSEKMSKeyId"] == key, (k, head)
