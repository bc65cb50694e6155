"""Small contracts of issue 14's modules on their own: the Object Lock parameters of a copy
(backfill/pipeline/lock.py) and the SSE-C key file (backfill/sse_c.py). End to end: test_real_buckets.py."""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backfill.errors import UserError
from backfill.s3.lock import lock_params
from backfill.s3.sse_c import read_key


def test_lock_params_carry_retention_and_hold_but_not_an_expired_retention() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    future, past = now + timedelta(days=1), now - timedelta(seconds=1)
    assert lock_params({"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": future}, now) == (
        {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": future},
        False,
    )
    head = {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": past, "ObjectLockLegalHoldStatus": "ON"}
    assert lock_params(head, now) == ({"ObjectLockLegalHoldStatus": "ON"}, True)
    soon = {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": now + timedelta(seconds=20)}
    assert lock_params(soon, now) == ({}, True)  # would expire before the copy lands
    assert lock_params({"ObjectLockLegalHoldStatus": "OFF"}, now) == ({}, False)
    assert lock_params({}, now) == ({}, False)


def test_sse_c_key_file_raw_or_base64_and_never_shown(tmp_path: Path) -> None:
    key = os.urandom(32)
    raw, b64, bad = tmp_path / "raw", tmp_path / "b64", tmp_path / "bad"
    raw.write_bytes(key)
    b64.write_text(base64.b64encode(key).decode() + "\n")
    bad.write_text("not a key")
    for p in (raw, b64):
        k = read_key(str(p), "--source-sse-c-key")
        h = k.headers(copy_source=True)
        assert h["x-amz-copy-source-server-side-encryption-customer-key"] == base64.b64encode(key).decode()
        assert (
            h["x-amz-copy-source-server-side-encryption-customer-key-MD5"]
            == base64.b64encode(hashlib.md5(key).digest()).decode()
        )
        assert k.params()["SSECustomerKey"] == key
        assert base64.b64encode(key).decode() not in repr(k) and key.hex() not in repr(k)
    with pytest.raises(UserError, match="32 raw bytes or their base64"):
        read_key(str(bad), "--dest-sse-c-key")
    with pytest.raises(UserError, match="cannot read --dest-sse-c-key"):
        read_key(str(tmp_path / "missing"), "--dest-sse-c-key")


def test_a_kms_denial_in_mid_run_is_named_as_such() -> None:
    """S3 passes KMS's refusal on as AccessDenied with KMS's message: the line names kms:Decrypt (not
    s3:GetObjectVersion, the wrong fix) and the aws/s3 case."""
    from botocore.exceptions import ClientError

    from backfill.errors import AccessDenied, classify

    msg = (
        "The ciphertext refers to a customer master key that does not exist, does not exist in this region, "
        "or you are not allowed to access."
    )
    exc = ClientError(
        {"Error": {"Code": "AccessDenied", "Message": msg}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "CopyObject"
    )
    err = classify(exc, what="CopyObject s3://src/k?versionId=v", profile_hint="profile backup")
    assert isinstance(err, AccessDenied)
    assert "KMS" in str(err) and "kms:Decrypt" in str(err) and "aws/s3" in str(err)
    plain = ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
        "CopyObject",
    )
    assert "s3:GetObjectVersion" in str(classify(plain, what="CopyObject s3://src/k"))
