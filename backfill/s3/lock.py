"""Object Lock settings of a copy, from the source version's HEAD.

S3 carries neither retention nor legal hold through CopyObject or CreateMultipartUpload by itself: the
copy must name them (x-amz-object-lock-mode, -retain-until-date, -legal-hold). Two rules of S3's:

- a retain-until date must be in the future ("The retain until date must be in the future!",
  InvalidArgument): a version whose retention has expired is copied without one — it protects nothing
  any more on the source either — and its legal hold, which has no date, is carried;
- the replica must have Object Lock (a copy with lock settings into a bucket without it is refused,
  InvalidRequest; replication too needs Object Lock on the destination: DstBucketObjectLockConfigMissing):
  checked before the run (pipeline/sides.py preflight).

GOVERNANCE retention can be shortened or removed by a principal with s3:BypassGovernanceRetention;
COMPLIANCE retention by no one, the root user included, until it expires (S3 User Guide, "Object Lock").
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

# A copy reaches S3 a little after we decide: a retention ending sooner than this is treated as expired.
MARGIN = timedelta(minutes=1)


def lock_params(head: Mapping[str, Any], now: datetime | None = None) -> tuple[dict[str, Any], bool]:
    """(CopyObject/CreateMultipartUpload parameters, whether a retention had expired and was left out)."""
    p: dict[str, Any] = {}
    expired = False
    mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
    if mode and until:
        when = until if isinstance(until, datetime) else datetime.fromisoformat(str(until).replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if when > (now or datetime.now(UTC)) + MARGIN:
            p["ObjectLockMode"] = mode
            p["ObjectLockRetainUntilDate"] = when
        else:
            expired = True
    if head.get("ObjectLockLegalHoldStatus") == "ON":
        p["ObjectLockLegalHoldStatus"] = "ON"
    return p, expired
