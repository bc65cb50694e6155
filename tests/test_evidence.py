"""The matching rule of backfill/pipeline/evidence.py, on its own (the end-to-end proofs are in
tests/test_real_buckets.py): what each kind of evidence decides, and what it must not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from backfill.models import Version
from backfill.pipeline.evidence import Verdict, by_checksum, by_heads, by_metadata, is_our_copy, may_be_ours

MD5_A, MD5_B = "a" * 32, "b" * 32


def v(etag: str = MD5_A, size: int = 10, vid: str = "v1", when: str = "2026-12-01T10:00:00.000Z") -> Version:
    return Version("k", vid, size, etag, when)


def test_metadata_decides_kind_size_and_equal_etags_only() -> None:
    marker = Version("k", "m", 0, "", "", True)
    assert by_metadata(marker, marker)[0] is Verdict.SAME
    assert by_metadata(marker, v())[0] is Verdict.DIFFERENT
    assert by_metadata(v(size=1), v(size=2))[0] is Verdict.DIFFERENT
    assert by_metadata(v(), v())[0] is Verdict.SAME
    assert by_metadata(v(MD5_A), v(MD5_B))[0] is Verdict.UNKNOWN  # different ETags prove nothing by themselves


def test_checksums_decide_only_when_comparable() -> None:
    crc = {"ChecksumCRC32": "AAAA=="}
    assert by_checksum(crc, crc)[0] is Verdict.SAME
    assert by_checksum(crc, {"ChecksumCRC32": "BBBB=="})[0] is Verdict.DIFFERENT
    assert by_checksum(crc, {"ChecksumSHA256": "x"})[0] is Verdict.UNKNOWN  # no common algorithm
    composite = {"ChecksumCRC32": "CCCC==-2", "ChecksumType": "COMPOSITE"}
    full = {"ChecksumCRC32": "AAAA==", "ChecksumType": "FULL_OBJECT"}
    assert by_checksum(composite, full)[0] is Verdict.UNKNOWN  # a composite depends on the layout
    assert by_checksum(composite, {"ChecksumCRC32": "CCCC==-3"})[0] is Verdict.UNKNOWN
    assert by_checksum(composite, composite)[0] is Verdict.SAME


def test_two_etags_prove_a_difference_only_when_both_are_md5s() -> None:
    plain: dict[str, Any] = {}
    kms = {"ServerSideEncryption": "aws:kms"}
    ssec = {"SSECustomerAlgorithm": "AES256"}
    assert by_heads(v(MD5_A), v(MD5_B), plain, plain)[0] is Verdict.DIFFERENT
    assert by_heads(v(MD5_A), v(MD5_B), plain, kms)[0] is Verdict.UNKNOWN
    assert by_heads(v(MD5_A), v(MD5_B), ssec, plain)[0] is Verdict.UNKNOWN
    # No HEAD (gone, or refused): nothing says it is not an MD5; a HEAD showing SSE-KMS does.
    assert by_heads(v(MD5_A), v(MD5_B), None, plain)[0] is Verdict.DIFFERENT
    assert by_heads(v(MD5_A), v(MD5_B), None, kms)[0] is Verdict.UNKNOWN
    assert by_heads(v(MD5_A + "-2"), v(MD5_B), plain, plain)[0] is Verdict.UNKNOWN  # multipart
    # A checksum outweighs the ETags: an SSE-KMS pair with equal CRCs is the same content.
    crc = {"ChecksumCRC32": "AAAA==", "ServerSideEncryption": "aws:kms"}
    assert by_heads(v(MD5_A), v(MD5_B), crc, crc) == (Verdict.SAME, "checksum CRC32")


def test_a_write_is_ours_unless_the_evidence_says_otherwise() -> None:
    async def head(h: dict[str, Any] | None) -> dict[str, Any] | None:
        return h

    async def main() -> None:
        kms = {"ServerSideEncryption": "aws:kms"}
        # SSE-KMS on the replica, no checksums: kind and size agree, so the placed version is ours.
        assert await is_our_copy(v(MD5_A), v(MD5_B), lambda: head({}), lambda: head(kms))
        # A checksum that differs, or two MD5s that differ, say it is not.
        assert not await is_our_copy(
            v(), v(MD5_B), lambda: head({"ChecksumCRC32": "A"}), lambda: head({"ChecksumCRC32": "B"})
        )
        assert not await is_our_copy(v(MD5_A), v(MD5_B), lambda: head({}), lambda: head({}))
        assert not await is_our_copy(v(size=3), v(size=4), lambda: head({}), lambda: head({}))

    anyio.run(main)


def test_what_may_be_ours() -> None:
    since = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    old = (since - timedelta(minutes=6)).isoformat().replace("+00:00", "Z")
    slack = (since - timedelta(minutes=4)).isoformat().replace("+00:00", "Z")
    assert may_be_ours(v(vid="r1"), recorded=set(), source_ids=set(), since=since)
    assert not may_be_ours(v(vid="r1"), recorded={"r1"}, source_ids=set(), since=since)
    assert not may_be_ours(v(vid="s1"), recorded=set(), source_ids={"s1"}, since=since)  # replication's
    assert not may_be_ours(v(vid="r1", when=old), recorded=set(), source_ids=set(), since=since)
    assert may_be_ours(v(vid="r1", when=slack), recorded=set(), source_ids=set(), since=since)
