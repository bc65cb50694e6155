"""Which S3 fault a request gets: the fault kinds, S3's error answers, and the seeded decider.

Faults are decided per request, in the order requests arrive, by one seeded
random.Random per operation: the k-th CopyObject's fate depends only on the seed,
the rates and k, never on timing. The kinds are listed in testbed/proxy.py, which
injects them. Operations are recognised from the method, the path (path-style or
virtual-host addressing), the query and the x-amz-copy-source header; see `operation()`.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

KINDS = ("slowdown", "internal_error", "access_denied", "error_200", "reset", "reset_after", "stall")

# Operations the proxy can tell apart (for --only and Fault.op).
OPERATIONS = frozenset(
    {
        "AbortMultipartUpload",
        "CompleteMultipartUpload",
        "CopyObject",
        "CreateBucket",
        "CreateMultipartUpload",
        "DeleteBucket",
        "DeleteObject",
        "DeleteObjectTagging",
        "DeleteObjects",
        "GetBucketLocation",
        "GetObjectLegalHold",
        "GetObjectRetention",
        "GetObjectAcl",
        "GetBucketReplication",
        "GetBucketEncryption",
        "GetBucketAcl",
        "GetBucketTagging",
        "GetBucketPolicy",
        "GetObjectLockConfiguration",
        "GetBucketVersioning",
        "GetObject",
        "GetObjectAttributes",
        "GetObjectTagging",
        "HeadBucket",
        "HeadObject",
        "ListBuckets",
        "ListMultipartUploads",
        "ListObjectVersions",
        "ListObjects",
        "ListObjectsV2",
        "ListParts",
        "PutBucketVersioning",
        "PutObject",
        "PutObjectTagging",
        "UploadPart",
        "UploadPartCopy",
        "Other",
    }
)
# error_200 only exists for these: they answer 200 before they know the outcome.
ERROR_200_OPERATIONS = frozenset({"CopyObject", "UploadPartCopy", "CompleteMultipartUpload"})

_STATUS = {
    "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "internal_error": (
        500,
        "Internal Server Error",
        "InternalError",
        "We encountered an internal error. Please try again.",
    ),
    "access_denied": (403, "Forbidden", "AccessDenied", "Access Denied"),
    "error_200": (200, "OK", "InternalError", "We encountered an internal error. Please try again."),
}


@dataclass(frozen=True, slots=True)
class Fault:
    """Inject `kind` into a fraction `rate` of the requests of operation `op` (None: every operation).

    error_200 with op None applies to the operations that can answer that way.
    `limit` caps how many times this fault is injected; `seconds` is a stall's length.
    """

    kind: str
    rate: float
    op: str | None = None
    limit: int | None = None
    seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be within [0, 1], not {self.rate}")
        if self.op is not None and self.op not in OPERATIONS:
            raise ValueError(f"unknown operation {self.op!r}; one of {', '.join(sorted(OPERATIONS))}")
        if self.kind == "error_200" and self.op is not None and self.op not in ERROR_200_OPERATIONS:
            raise ValueError(f"error_200 applies to {', '.join(sorted(ERROR_200_OPERATIONS))}, not {self.op}")

    def applies_to(self, op: str) -> bool:
        if self.op is not None:
            return self.op == op
        return self.kind != "error_200" or op in ERROR_200_OPERATIONS


class Decider:
    """Which fault (if any) the next request of an operation gets: a pure function of seed and arrival order."""

    def __init__(self, faults: Sequence[Fault], seed: int) -> None:
        self.faults = tuple(faults)
        self.seed = seed
        self._rules: dict[str, tuple[int, ...]] = {}
        for op in OPERATIONS:
            rules = tuple(i for i, f in enumerate(self.faults) if f.applies_to(op) and f.rate > 0)
            total = sum(self.faults[i].rate for i in rules)
            if total > 1.0 + 1e-9:
                raise ValueError(f"fault rates for {op} add up to {total:.3f} > 1")
            self._rules[op] = rules
        self._rngs: dict[str, random.Random] = {}
        self._used = [0] * len(self.faults)

    def decide(self, op: str) -> Fault | None:
        rules = self._rules.get(op, ())
        if not rules:
            return None
        rng = self._rngs.get(op)
        if rng is None:
            rng = self._rngs[op] = random.Random(f"{self.seed}/{op}")
        u = rng.random()  # one draw per request of this operation, whatever the outcome
        acc = 0.0
        for i in rules:
            f = self.faults[i]
            acc += f.rate
            if u < acc:
                if f.limit is not None and self._used[i] >= f.limit:
                    return None
                self._used[i] += 1
                return f
        return None


def _is_ip_or_local(host: str) -> bool:
    if host == "localhost" or ":" in host:
        return True
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return host.count(".") == 3


def operation(method: str, target: str, headers: Mapping[str, str]) -> str:
    """The S3 operation of a request, from its method, target and (lower-cased) headers."""
    path, _, query = target.partition("?")
    params = {p.split("=", 1)[0] for p in query.split("&") if p}
    segments = [s for s in path.split("/") if s]
    host = headers.get("host", "").rsplit(":", 1)[0] if not headers.get("host", "").startswith("[") else ""
    virtual = bool(host) and not _is_ip_or_local(host) and host.count(".") >= 2 and not host.startswith("s3.")
    has_bucket = virtual or len(segments) >= 1
    has_key = len(segments) >= (1 if virtual else 2)
    if not has_bucket:
        return "ListBuckets" if method == "GET" else "Other"
    if has_key:
        if method == "PUT":
            if "x-amz-copy-source" in headers:
                return "UploadPartCopy" if "partNumber" in params else "CopyObject"
            if "partNumber" in params:
                return "UploadPart"
            return "PutObjectTagging" if "tagging" in params else "PutObject"
        if method == "GET":
            for p, op in (
                ("uploadId", "ListParts"),
                ("tagging", "GetObjectTagging"),
                ("attributes", "GetObjectAttributes"),
                ("acl", "GetObjectAcl"),
                ("retention", "GetObjectRetention"),
                ("legal-hold", "GetObjectLegalHold"),
            ):
                if p in params:
                    return op
            return "GetObject"
        if method == "HEAD":
            return "HeadObject"
        if method == "DELETE":
            if "uploadId" in params:
                return "AbortMultipartUpload"
            return "DeleteObjectTagging" if "tagging" in params else "DeleteObject"
        if method == "POST":
            if "uploads" in params:
                return "CreateMultipartUpload"
            if "uploadId" in params:
                return "CompleteMultipartUpload"
        return "Other"
    if method == "GET":
        for p, op in (
            ("versions", "ListObjectVersions"),
            ("uploads", "ListMultipartUploads"),
            ("location", "GetBucketLocation"),
            ("versioning", "GetBucketVersioning"),
            ("object-lock", "GetObjectLockConfiguration"),
            ("policy", "GetBucketPolicy"),
            ("tagging", "GetBucketTagging"),
            ("acl", "GetBucketAcl"),
            ("encryption", "GetBucketEncryption"),
            ("replication", "GetBucketReplication"),
        ):
            if p in params:
                return op
        if query and any(p.startswith("list-type=2") for p in query.split("&")):
            return "ListObjectsV2"
        return (
            "ListObjects"
            if not params or params <= {"prefix", "marker", "delimiter", "max-keys", "encoding-type"}
            else "Other"
        )
    if method == "HEAD":
        return "HeadBucket"
    if method == "PUT":
        if not params:
            return "CreateBucket"
        return "PutBucketVersioning" if "versioning" in params else "Other"
    if method == "DELETE":
        return "DeleteBucket" if not params else "Other"
    if method == "POST" and "delete" in params:
        return "DeleteObjects"
    return "Other"


def s3_error(kind: str, resource: str, request_id: str, *, head_only: bool, close: bool) -> bytes:
    """A whole HTTP response carrying S3's XML error document for a fault kind."""
    status, reason, code, message = _STATUS[kind]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><Resource>{_xml_escape(resource)}</Resource>"
        f"<RequestId>{request_id}</RequestId><HostId>{request_id}</HostId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"x-amz-request-id: {request_id}\r\n"
        f"x-amz-id-2: {request_id}\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}\r\n"
        "Server: AmazonS3\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    ).encode()
    return head if head_only else head + body


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
