"""Before a run: the requests it will send, what they cost, and how long they take.

What a run sends, per version (as `s3.Copier` and `pipeline.lister` send it, without retries):

- a delete marker: one DeleteObject to the replica;
- an object up to --multipart-threshold: one CopyObject (plus one HeadObject of the source when
  Object Lock settings are carried: that copy goes through botocore with the lock headers);
- a larger object: HeadObject of the version, HeadObject PartNumber=1 (and PartNumber=2…N when the
  source has N > 1 parts: its ETag ends in "-N"), GetObjectTagging, CreateMultipartUpload, one
  UploadPartCopy per part (the source's N parts, else --part-size parts, at most 10,000), and
  CompleteMultipartUpload;
- listing: ListObjectVersions pages per shard (100 entries in the first page, then 1,000), plus
  the shard discovery's few listings; the dry run counts the pages it really sent.

Prices (`prices.json`, or `--prices FILE` in the same format): requests are charged per 1,000 —
"PUT, COPY, POST, LIST" (tier 1) or "GET, SELECT, and all other requests" (tier 2) — at the price
of the storage class of the object and the region of the bucket the request is sent to; DELETE is
free (https://aws.amazon.com/s3/pricing/, Storage & requests). So LIST is tier 1 in the source
region, HEAD and GetObjectTagging tier 2 of the source object's class in the source region, and
CopyObject, CreateMultipartUpload, UploadPartCopy and CompleteMultipartUpload tier 1 of the
destination class (the source's, which the copy carries) in the replica's region. "Data
transferred via a COPY request between Regions is charged at regular rates" (S3 FAQ), by the
region the data leaves (AWS Data Exports user guide, "Understanding data transfer charges").
Copying out of Standard-IA, One Zone-IA or Glacier Instant Retrieval is a retrieval, charged
per GB. A GB here is 2**30 bytes.

KMS: "When you use SSE-KMS … without an S3 Bucket Key, Amazon S3 uses an individual AWS KMS data
key for every object. It makes a call to AWS KMS every time a request is made against a
KMS-encrypted object" (S3 user guide, "Reducing the cost of SSE-KMS with Amazon S3 Bucket Keys").
Counted here: one Decrypt per CopyObject or UploadPartCopy that reads a KMS-encrypted source; one
GenerateDataKey per CopyObject or CreateMultipartUpload that writes with --sse-kms-key-id, and
one Decrypt per UploadPartCopy into it ("kms:GenerateDataKey for CreateMultipartUpload … kms:Decrypt
on the UploadPart and UploadPartCopy APIs", S3 API reference, CreateMultipartUpload). HEAD is not
counted (object metadata is not encrypted). With S3 Bucket Keys the real count is far lower (S3
says up to 99 %): the figure is an upper bound. $0.03 per 10,000 requests
(https://aws.amazon.com/kms/pricing/).

Time: "your application can achieve at least 3,500 PUT/COPY/POST/DELETE or 5,500 GET/HEAD
requests per second per partitioned prefix" (S3 user guide, "Best practices design patterns:
optimizing Amazon S3 performance"); the scaling to a higher rate "happens gradually". The run's
time is the largest of: the replica's writes over 3,500/s × prefixes, the source's reads over
5,500/s × prefixes, all requests over --max-rps, the copiers' busy time (a latency per request
plus the bytes at a per-copy rate) over --concurrency, and the listing (pages one after another
per shard, at most 8 shards at once).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from backfill.config import MAX_COPY_OBJECT, MAX_PARTS, MiB
from backfill.errors import UserError
from backfill.models import Version

WRITES_PER_PREFIX = 3_500  # PUT/COPY/POST/DELETE per second per partitioned prefix
READS_PER_PREFIX = 5_500  # GET/HEAD per second per partitioned prefix
MAX_LISTERS = 8  # shards listed at once (pipeline.runner)
FIRST_PAGE = 100  # entries in a shard's first ListObjectVersions page (pipeline.lister), then 1,000
GB = 1024**3
# Archived classes: a copy of a version not restored is refused and the version skipped.
ARCHIVED = frozenset({"GLACIER", "DEEP_ARCHIVE"})


def etag_parts(etag: str) -> int:
    """The part count of a multipart ETag ("…-N"), else 0."""
    _, dash, tail = etag.strip('"').rpartition("-")
    return int(tail) if dash and tail.isdigit() else 0


def even_parts(total: int, part_size: int) -> int:
    """How many parts Copier._even_parts makes of `total` bytes."""
    size = max(part_size, -(-total // MAX_PARTS))
    whole = total // size
    return whole + (1 if total % size or not whole else 0)


@dataclass(frozen=True, slots=True)
class Layout:
    """The copy options that decide which requests a version takes."""

    multipart_threshold: int = MAX_COPY_OBJECT
    part_size: int = 512 * MiB
    carry_lock: bool = False  # the source has Object Lock: each CopyObject reads the version's lock first


@dataclass(slots=True)
class Requests:
    """Request counts by kind."""

    list: int = 0
    head: int = 0
    get_tagging: int = 0
    copy: int = 0
    create_multipart: int = 0
    upload_part_copy: int = 0
    complete_multipart: int = 0
    delete: int = 0
    kms: int = 0

    def add(self, other: Requests) -> None:
        # Field by field, not through dataclasses.fields(): a run adds one per version it lists.
        self.list += other.list
        self.head += other.head
        self.get_tagging += other.get_tagging
        self.copy += other.copy
        self.create_multipart += other.create_multipart
        self.upload_part_copy += other.upload_part_copy
        self.complete_multipart += other.complete_multipart
        self.delete += other.delete
        self.kms += other.kms

    @property
    def writes(self) -> int:
        """Requests to the replica (all PUT/COPY/POST/DELETE)."""
        return self.copy + self.create_multipart + self.upload_part_copy + self.complete_multipart + self.delete

    @property
    def reads(self) -> int:
        """Requests to the source (GET/HEAD; listing apart)."""
        return self.head + self.get_tagging

    @property
    def total(self) -> int:
        return self.list + self.writes + self.reads


def version_requests(v: Version, layout: Layout, *, source_kms: bool = False, dest_kms: bool = False) -> Requests:
    """What a run sends to copy one version (listing apart), as s3.Copier sends it."""
    r = Requests()
    if v.is_delete_marker:
        r.delete = 1
        return r
    if v.size <= layout.multipart_threshold:
        r.copy = 1
        r.head = 1 if layout.carry_lock else 0
        r.kms = int(source_kms) + int(dest_kms)
        return r
    n = etag_parts(v.etag)
    if 1 < n <= MAX_PARTS:
        r.head, parts = 1 + n, n  # the version, then PartNumber=1…N
    else:
        r.head, parts = 2, even_parts(v.size, layout.part_size)  # the version, PartNumber=1
    r.get_tagging = 1
    r.create_multipart = 1
    r.upload_part_copy = parts
    r.complete_multipart = 1
    r.kms = parts * int(source_kms) + (1 + parts) * int(dest_kms)
    return r


@dataclass(slots=True)
class ClassTally:
    """The versions of one storage class and their requests."""

    versions: int = 0
    bytes: int = 0
    requests: Requests = field(default_factory=Requests)


@dataclass(slots=True)
class Tally:
    """What a job holds, counted as it is listed (or read from an inventory)."""

    layout: Layout = field(default_factory=Layout)
    dest_kms: bool = False  # --sse-kms-key-id
    source_kms: bool = False  # assume KMS-encrypted sources where a version does not say (listing cannot tell)
    versions: int = 0
    delete_markers: int = 0
    bytes: int = 0
    archived: int = 0  # GLACIER / DEEP_ARCHIVE versions: copied only if restored, else skipped
    list_requests: int = 0
    preflight_heads: int = 0  # the run's KMS preflight HEADs (a sample of the first versions)
    classes: dict[str, ClassTally] = field(default_factory=dict)

    def add(self, v: Version, *, source_kms: bool | None = None) -> None:
        kms = self.source_kms if source_kms is None else source_kms
        r = version_requests(v, self.layout, source_kms=kms, dest_kms=self.dest_kms)
        c = self.classes.setdefault(v.storage_class or "STANDARD", ClassTally())
        c.versions += 1
        c.requests.add(r)
        self.versions += 1
        if v.is_delete_marker:
            self.delete_markers += 1
            return
        c.bytes += v.size
        self.bytes += v.size
        self.archived += (v.storage_class or "STANDARD") in ARCHIVED

    def requests(self) -> Requests:
        total = Requests(list=self.list_requests, head=self.preflight_heads)
        for c in self.classes.values():
            total.add(c.requests)
        return total


def list_pages(versions: int, shards: int) -> int:
    """ListObjectVersions pages to list `versions` entries spread over `shards` shards (an estimate
    for a bucket not listed: each shard's first page holds 100 entries, the others 1,000)."""
    shards = max(1, shards)
    per = versions / shards
    extra = math.ceil(max(0.0, per - FIRST_PAGE) / 1000)
    return shards * (1 + extra)


# --- prices ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriceTable:
    source: str
    as_of: str
    kms_per_10k: float
    classes_from: str
    regions: dict[str, dict[str, Any]]
    origin: str  # "shipped" or the --prices file

    def region(self, name: str) -> dict[str, Any]:
        r = self.regions.get(name)
        if r is None:
            raise UserError(
                f"no prices for region {name!r} in {self.origin}: pass --prices FILE with that region "
                f"(the format of backfill/prices.json; regions there: {', '.join(sorted(self.regions))})"
            )
        return r

    def request_price(self, region: str, storage_class: str, tier: str) -> float:
        """Dollars per request."""
        for r in (self.region(region), self.region(self.classes_from)):
            p = r.get("requests", {}).get(storage_class)
            if p is not None and tier in p:
                return float(p[tier]) / 1000
        return float(self.region(region)["requests"]["STANDARD"][tier]) / 1000

    def retrieval_per_gb(self, region: str, storage_class: str) -> float:
        for r in (self.region(region), self.region(self.classes_from)):
            p = r.get("retrieval_per_gb", {})
            if storage_class in p:
                return float(p[storage_class])
        return 0.0

    def transfer_per_gb(self, source: str, dest: str) -> float:
        if source == dest:
            return 0.0
        r = self.region(source)
        return float(r.get("transfer_to", {}).get(dest, r["transfer_per_gb"]))


def _check_region(origin: str, name: str, r: Any) -> None:
    if not isinstance(r, dict):
        raise UserError(f"{origin}: region {name!r} must be an object")
    try:
        std = r["requests"]["STANDARD"]
        float(std["tier1"]), float(std["tier2"]), float(r["transfer_per_gb"])
        for c in r["requests"].values():
            for v in c.values():
                float(v)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError(
            f"{origin}: region {name!r} needs requests.STANDARD.tier1, requests.STANDARD.tier2 and "
            "transfer_per_gb as numbers (see the format of backfill/prices.json)"
        ) from None


def load_prices(path: str | None = None) -> PriceTable:
    """The shipped table, with the regions of `path` (same format) laid over it."""
    shipped = json.loads(resources.files("backfill").joinpath("prices.json").read_text(encoding="utf-8"))
    table = PriceTable(
        source=shipped["source"],
        as_of=shipped["as_of"],
        kms_per_10k=float(shipped["kms_per_10k"]),
        classes_from=shipped["classes_from"],
        regions=dict(shipped["regions"]),
        origin="the shipped price table",
    )
    if path is None:
        return table
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"--prices {path}: cannot read it ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"--prices {path}: not JSON ({exc}); see the format of backfill/prices.json") from None
    if not isinstance(data, dict) or not isinstance(data.get("regions"), dict) or not data["regions"]:
        raise UserError(f"--prices {path}: needs an object with 'regions' (see the format of backfill/prices.json)")
    for name, r in data["regions"].items():
        _check_region(f"--prices {path}", name, r)
    try:
        kms = float(data.get("kms_per_10k", table.kms_per_10k))
    except (TypeError, ValueError):
        raise UserError(f"--prices {path}: kms_per_10k must be a number") from None
    return PriceTable(
        source=str(data.get("source") or path),
        as_of=str(data.get("as_of") or "unknown"),
        kms_per_10k=kms,
        classes_from=table.classes_from,
        regions={**table.regions, **data["regions"]},
        origin=f"--prices {path}",
    )


# --- the estimate ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    concurrency: int = 256
    max_rps: float | None = None
    prefixes: int = 1  # partitioned prefixes S3 has (or will have) for the buckets
    latency: float = 0.05  # seconds per request, round trip and server time
    copy_rate: float = 50 * MiB  # bytes/s a server-side copy moves (an assumption; a run shows its own)
    shards: int = 1


@dataclass(slots=True)
class Estimate:
    versions: int
    delete_markers: int
    archived: int
    requests: dict[str, int]
    bytes_copied: int
    cross_region_bytes: int
    usd: dict[str, float]
    prices: dict[str, str]
    hours: float
    bound_by: str
    seconds_by: dict[str, float]
    remaining: bool = False  # a resumed job: what is left, not the whole job

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def one_line(self) -> str:
        u = self.usd
        what = "left to copy" if self.remaining else "to copy"
        took = self.seconds_by[self.bound_by] / 3600
        return (
            f"estimate: {self.versions:,} versions {what} ({self.delete_markers:,} delete markers), "
            f"{_gib(self.bytes_copied)} ({_gib(self.cross_region_bytes)} across regions), "
            f"{sum(v for k, v in self.requests.items() if k != 'kms'):,} S3 requests, "
            f"${u['total']:,.2f} (requests ${u['requests']:,.2f}, transfer ${u['transfer']:,.2f}, "
            f"KMS ${u['kms']:,.2f}, retrieval ${u['retrieval']:,.2f}), about {_duration(took)} "
            f"(bound by {self.bound_by}); prices {self.prices['region']} as of {self.prices['as_of']}"
        )

    def lines(self) -> list[str]:
        r = self.requests
        out = [self.one_line(), "  requests:"]
        for k in ("list", "head", "get_tagging", "copy", "create_multipart", "upload_part_copy"):
            out.append(f"    {k:<20} {r[k]:>14,}")
        for k in ("complete_multipart", "delete", "kms"):
            out.append(f"    {k:<20} {r[k]:>14,}")
        out.append("  time, by what bounds it:")
        for k, s in sorted(self.seconds_by.items(), key=lambda kv: -kv[1]):
            out.append(f"    {k:<20} {_duration(s / 3600):>14}")
        if self.archived:
            out.append(f"  {self.archived:,} versions are archived (GLACIER/DEEP_ARCHIVE): skipped unless restored")
        return out


def _gib(n: int) -> str:
    for unit, size in (("PiB", 1024**5), ("TiB", 1024**4), ("GiB", GB), ("MiB", MiB)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,} B"


def _duration(hours: float) -> str:
    if hours < 1 / 60:
        return f"{hours * 3600:.1f} s"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


def estimate(
    tally: Tally,
    prices: PriceTable,
    source_region: str,
    dest_region: str,
    timing: Timing | None = None,
    *,
    remaining: bool = False,
) -> Estimate:
    """Requests, bytes, dollars and hours of the job `tally` counted."""
    t = timing or Timing()
    req = tally.requests()
    usd_requests = req.list * prices.request_price(source_region, "STANDARD", "tier1")
    retrieval = 0.0
    for cls, c in tally.classes.items():
        r = c.requests
        tier1 = r.copy + r.create_multipart + r.upload_part_copy + r.complete_multipart
        usd_requests += tier1 * prices.request_price(dest_region, cls, "tier1")
        usd_requests += r.reads * prices.request_price(source_region, cls, "tier2")
        retrieval += c.bytes / GB * prices.retrieval_per_gb(source_region, cls)
    cross = tally.bytes if source_region != dest_region else 0
    transfer = cross / GB * prices.transfer_per_gb(source_region, dest_region)
    kms = req.kms * prices.kms_per_10k / 10_000
    usd = {
        "requests": round(usd_requests, 2),
        "transfer": round(transfer, 2),
        "kms": round(kms, 2),
        "retrieval": round(retrieval, 2),
        "total": round(usd_requests + transfer + kms + retrieval, 2),
    }
    prefixes = max(1, t.prefixes)
    seconds = {
        "replica writes/prefix": req.writes / (WRITES_PER_PREFIX * prefixes),
        "source reads/prefix": req.reads / (READS_PER_PREFIX * prefixes),
        "concurrency": ((req.writes + req.reads) * t.latency + tally.bytes / t.copy_rate) / max(1, t.concurrency),
        "listing": req.list * t.latency / max(1, min(MAX_LISTERS, t.shards)),
    }
    if t.max_rps:
        seconds["max-rps"] = req.total / t.max_rps
    bound_by = max(seconds, key=lambda k: seconds[k])
    region = source_region if source_region == dest_region else f"{source_region}->{dest_region}"
    return Estimate(
        versions=tally.versions,
        delete_markers=tally.delete_markers,
        archived=tally.archived,
        requests={f.name: getattr(req, f.name) for f in fields(req)},
        bytes_copied=tally.bytes,
        cross_region_bytes=cross,
        usd=usd,
        prices={"region": region, "source": prices.source, "as_of": prices.as_of, "table": prices.origin},
        hours=round(seconds[bound_by] / 3600, 4),
        bound_by=bound_by,
        seconds_by={k: round(v, 3) for k, v in seconds.items()},
        remaining=remaining,
    )
