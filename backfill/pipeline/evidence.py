"""Is replica version R the copy of source version S? The evidence S3 gives, strongest first.

Asked by reconcile (after a crash), by the "did my write land" check (after a lost answer) and by
verify. ETags alone cannot answer it: under SSE-KMS and SSE-C an ETag is not the MD5 of the content
("Objects … encrypted by SSE-C or SSE-KMS, have ETags that are not an MD5 digest of their object data",
S3 API reference, Object / ETag), and a multipart ETag depends on the part layout.

1. Kind (object or delete marker) and size must agree.
2. Equal ETags mean equal content.
3. A checksum of the same algorithm and type on both sides (HEAD with ChecksumMode=ENABLED) decides
   either way: S3 computes it over the plaintext, and CopyObject keeps the source's algorithm.
4. Two different ETags decide "different" only when both are MD5s: single-part, and neither HEAD shows
   SSE-KMS (`aws:kms`, `aws:kms:dsse`) or SSE-C.
5. Otherwise content cannot be told from metadata. For *recognising a write* (not for verify) the
   caller's position and time rule then decides: see `may_be_ours` and README, "What backfill guarantees".
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from backfill.models import Version

CHECKSUMS = ("ChecksumCRC64NVME", "ChecksumSHA256", "ChecksumSHA1", "ChecksumCRC32C", "ChecksumCRC32")
_KMS = frozenset({"aws:kms", "aws:kms:dsse"})
CLOCK_SLACK = timedelta(minutes=5)  # between the server's clock and ours

Head = Mapping[str, Any]
HeadFn = Callable[[], Awaitable[Head | None]]  # None: the HEAD was refused (SSE-C without its key)


class Verdict(enum.Enum):
    SAME = "same"
    DIFFERENT = "different"
    UNKNOWN = "unknown"


def plain_md5(etag: str) -> bool:
    return len(etag) == 32 and "-" not in etag


def is_md5(v: Version, head: Head | None) -> bool:
    """The version's ETag is the MD5 of its content: single part, and HEAD shows neither SSE-KMS nor SSE-C.
    Without a HEAD (the version is gone, or refused it) nothing says otherwise: a single-part ETag is taken
    for an MD5, as S3 makes it for every object that is not SSE-KMS or SSE-C."""
    if not plain_md5(v.etag):
        return False
    if head is None:
        return True
    return head.get("ServerSideEncryption") not in _KMS and not head.get("SSECustomerAlgorithm")


def by_metadata(s: Version, d: Version) -> tuple[Verdict, str]:
    """What the listing alone says: kind, size, equal ETags."""
    if s.is_delete_marker or d.is_delete_marker:
        if s.is_delete_marker and d.is_delete_marker:
            return Verdict.SAME, "delete marker"
        return Verdict.DIFFERENT, "a delete marker against an object"
    if s.size != d.size:
        return Verdict.DIFFERENT, f"source {s.size} bytes, replica {d.size}"
    if s.etag and s.etag == d.etag:
        return Verdict.SAME, "etag"
    return Verdict.UNKNOWN, ""


def by_checksum(hs: Head, hd: Head) -> tuple[Verdict, str]:
    """A common checksum: same algorithm, and both full-object or both composite of as many parts."""
    ts, td = hs.get("ChecksumType"), hd.get("ChecksumType")
    for alg in CHECKSUMS:
        a, b = hs.get(alg), hd.get(alg)
        if not a or not b:
            continue
        name = alg.removeprefix("Checksum")
        composite_a, composite_b = "-" in a, "-" in b
        if composite_a != composite_b or (ts and td and ts != td):
            continue  # a composite checksum depends on the part layout: not comparable with a full-object one
        if composite_a and a.rpartition("-")[2] != b.rpartition("-")[2]:
            continue
        if a == b:
            return Verdict.SAME, f"checksum {name}"
        return Verdict.DIFFERENT, f"{name} checksum differs ({a} vs {b})"
    return Verdict.UNKNOWN, ""


def by_heads(s: Version, d: Version, hs: Head | None, hd: Head | None) -> tuple[Verdict, str]:
    """Checksums, then two MD5 ETags, from both sides' HEADs (None: refused)."""
    if hs is not None and hd is not None:
        verdict, how = by_checksum(hs, hd)
        if verdict is not Verdict.UNKNOWN:
            return verdict, how
    if is_md5(s, hs) and is_md5(d, hd):
        return Verdict.DIFFERENT, f"MD5 differs (ETag {s.etag} vs {d.etag})"
    return Verdict.UNKNOWN, ""


async def content(s: Version, d: Version, head_s: HeadFn, head_d: HeadFn) -> tuple[Verdict, str]:
    """Everything metadata can prove about two versions' content; HEADs only when the listing cannot."""
    verdict, how = by_metadata(s, d)
    if verdict is not Verdict.UNKNOWN:
        return verdict, how
    return by_heads(s, d, await head_s(), await head_d())


def may_be_ours(r: Version, *, recorded: Collection[str], source_ids: Collection[str], since: datetime | None) -> bool:
    """Could replica version `r` have been written by this job? Not if the manifest recorded it already,
    not if it carries one of the key's source version IDs (live replication keeps them; a copy gets a new
    one), not if it is older than the job's first run (less the clock slack)."""
    if r.version_id in recorded or r.version_id in source_ids:
        return False
    if since is not None and r.last_modified:
        written = datetime.fromisoformat(r.last_modified.replace("Z", "+00:00"))
        if written < since - CLOCK_SLACK:
            return False
    return True


async def is_our_copy(s: Version, r: Version, head_s: HeadFn, head_r: HeadFn) -> bool:
    """For recognising a write the caller already placed (position and time, `may_be_ours`): R is S's copy
    unless the evidence says it differs. Without a common checksum or two MD5s, position, kind, size and time
    are the evidence (README, "What backfill guarantees", states the limit)."""
    verdict, _ = await content(s, r, head_s, head_r)
    return verdict is not Verdict.DIFFERENT
