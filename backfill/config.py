"""Validated, frozen settings for a run, built by the CLI and used by the pipeline."""

from __future__ import annotations

import fnmatch
import re
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from backfill.errors import UserError

GiB = 1024**3
MiB = 1024**2
MAX_COPY_OBJECT = 5 * GiB  # CopyObject's limit on AWS
MIN_PART = 5 * MiB
MAX_PART = 5 * GiB
MAX_PARTS = 10_000
# Copies in flight, at most (the adaptive limiter works below it). At 50-100 ms per
# copy a process needs a few hundred in flight to use the ~5,000 copies/s its CPU can
# drive; s5cmd's default is 256 workers too.
COPY_CONCURRENCY = 256

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'5GiB', '64MB', '8M', '1048576' → bytes (K/M/G/T are powers of 1024)."""
    m = _SIZE.match(text)
    if not m:
        raise UserError(f"cannot read size {text!r}: write it like 64MiB, 5GiB or 1048576")
    number, unit = float(m.group(1)), m.group(2).upper()
    return int(number * {"": 1, "K": 1024, "M": MiB, "G": GiB, "T": 1024 * GiB}[unit])


@dataclass(frozen=True, slots=True)
class S3Url:
    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-_]{1,254}$")  # legacy us-east-1 names allow capitals


def parse_s3_url(text: str) -> S3Url:
    if not text.startswith("s3://"):
        raise UserError(f"{text!r} is not an S3 URL: write s3://BUCKET or s3://BUCKET/PREFIX")
    rest = text[5:]
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket):
        raise UserError(f"{text!r}: {bucket!r} is not a valid bucket name")
    return S3Url(bucket, prefix)


def rebase(key: str, old_prefix: str, new_prefix: str) -> str:
    """A key under one prefix, moved under another: how source keys map to replica keys."""
    return new_prefix + key[len(old_prefix) :]


def check_glob(option: str, glob: str) -> str:
    """A --include/--exclude pattern, refused when it cannot mean what was meant."""
    if not glob:
        raise UserError(f"{option} needs a pattern, e.g. {option} '*.log'")
    if glob.startswith("s3://"):
        raise UserError(f"{option} {glob!r}: a pattern matches keys relative to the source prefix (e.g. 'logs/*')")
    i = 0
    while i < len(glob):
        if glob[i] == "[":
            j = i + 1
            if j < len(glob) and glob[j] == "!":
                j += 1
            if j < len(glob) and glob[j] == "]":
                j += 1
            while j < len(glob) and glob[j] != "]":
                j += 1
            if j >= len(glob):
                raise UserError(f"{option} {glob!r}: a '[' opens a character set never closed ([[] matches '[')")
            i = j
        i += 1
    return glob


def check_endpoint(url: str | None) -> str | None:
    """An S3 endpoint URL (from an option or AWS_ENDPOINT_URL*), refused unless http(s)://HOST[:PORT][/PATH]."""
    if url is None:
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # raises for a port that is not a number
    except ValueError:
        ok = False
    if not ok:
        raise UserError(
            f"endpoint {url!r} is not an http(s) URL (--endpoint-url, --source-endpoint-url, --dest-endpoint-url, "
            "AWS_ENDPOINT_URL): write it like https://s3.example.com or http://127.0.0.1:9000"
        )
    return url


_ACCOUNT = re.compile(r"^\d{12}$")


def check_account(option: str, account: str | None) -> str | None:
    if account is not None and not _ACCOUNT.match(account):
        raise UserError(f"{option} {account!r}: an AWS account ID is 12 digits, e.g. 111122223333")
    return account


def parse_time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"cannot read time {text!r}: use ISO-8601, e.g. 2026-01-31T00:00:00Z") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Side:
    """How to reach one bucket: credentials profile, region, endpoint."""

    url: S3Url
    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    lean: bool = True  # the hot calls on the lean HTTP path (s3.Wire); False: all through botocore
    read_timeout: float = 60.0  # seconds a request may go without a byte from the server (lean path)
    expected_owner: str | None = None  # the bucket's account, sent with every request (ExpectedBucketOwner)
    request_payer: bool = False  # x-amz-request-payer: requester on every request (--request-payer requester)
    sse_c_key: str | None = None  # the file holding this side's SSE-C customer key (--source/--dest-sse-c-key)


@dataclass(frozen=True, slots=True)
class Filters:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    modified_before: datetime | None = None

    def key_selected(self, rel_key: str) -> bool:
        """Globs match the key relative to the source prefix (like `aws s3 sync`)."""
        if not (self.include or self.exclude):
            return True
        if self.include and not any(fnmatch.fnmatchcase(rel_key, g) for g in self.include):
            return False
        return not any(fnmatch.fnmatchcase(rel_key, g) for g in self.exclude)


@dataclass(frozen=True, slots=True)
class CopyOptions:
    versions: Literal["all", "latest"] = "all"
    multipart_threshold: int = MAX_COPY_OBJECT
    part_size: int = 512 * MiB
    acl: str | None = None
    sse_kms_key_id: str | None = None


@dataclass(frozen=True, slots=True)
class RunConfig:
    source: Side
    dest: Side
    manifest: str
    options: CopyOptions = field(default_factory=CopyOptions)
    filters: Filters = field(default_factory=Filters)
    concurrency: int = COPY_CONCURRENCY
    shards: int | None = None  # None: auto
    max_rps: float | None = None
    dry_run: bool = False
    grace_seconds: float = 30.0
    settle_seconds: float | None = None  # None: derived from the largest unfinished version
    progress_interval: float = 30.0
    allow_unversioned: bool = False  # with --versions latest: copy into a replica without versioning
    prices: str | None = None  # --prices FILE: a price table laid over the shipped one (estimate.load_prices)
    latency: float | None = None  # seconds per request for the time estimate (None: the measured round trip)
    prefixes: int | None = None  # partitioned prefixes for the time estimate (None: 1)
    inventory: str | None = None  # an S3 Inventory manifest.json as the job's source, instead of listing
    inventory_max_age: float | None = None  # seconds: refuse an older report
    log_format: Literal["text", "json"] = "text"  # the periodic line and the summary on a non-terminal
    quiet: bool = False  # no progress bar nor periodic line; only errors and the summary
    outage_timeout: float = 15 * 60.0  # seconds the endpoint may stay unreachable before the run stops

    def validate(self) -> RunConfig:
        o = self.options
        if self.concurrency < 1:
            raise UserError("--concurrency must be at least 1")
        if self.shards is not None and self.shards < 1:
            raise UserError("--shards must be 'auto' or at least 1")
        if self.max_rps is not None and self.max_rps <= 0:
            raise UserError("--max-rps must be positive")
        if self.outage_timeout <= 0:
            raise UserError("--outage-timeout must be positive (seconds)")
        if o.multipart_threshold > MAX_COPY_OBJECT:
            raise UserError("--multipart-threshold cannot exceed 5GiB, the largest object CopyObject takes")
        if o.multipart_threshold < 1:
            raise UserError("--multipart-threshold must be positive")
        if not MIN_PART <= o.part_size <= MAX_PART:
            raise UserError("--part-size must be between 5MiB and 5GiB")
        src, dst = self.source.url, self.dest.url
        if src.bucket == dst.bucket and (src.prefix.startswith(dst.prefix) or dst.prefix.startswith(src.prefix)):
            raise UserError(
                f"{src} and {dst} overlap: the copy would copy its own copies; in one bucket, give prefixes "
                "that do not contain each other (s3://b/a/ → s3://b/b/), or copy into another bucket"
            )
        return self

    def job_identity(self) -> dict[str, str]:
        """What makes a manifest belong to this job (not the tuning knobs)."""
        f = self.filters
        return {
            "source": str(self.source.url),
            "dest": str(self.dest.url),
            "versions": self.options.versions,
            "include": "\n".join(f.include),
            "exclude": "\n".join(f.exclude),
            "modified_before": f.modified_before.isoformat() if f.modified_before else "",
        }


@dataclass(frozen=True, slots=True)
class VerifyConfig:
    source: Side
    dest: Side
    manifest: str | None = None
    versions: Literal["all", "latest"] = "all"
    report: str | None = None
    deep: bool = False
    concurrency: int = 64
    shards: int | None = None
    max_rps: float | None = None
    progress_interval: float = 30.0

    def validate(self) -> VerifyConfig:
        if self.concurrency < 1:
            raise UserError("--concurrency must be at least 1")
        if self.report is not None and not self.report.endswith((".csv", ".json")):
            raise UserError(f"--report {self.report}: name a .csv or a .json file")
        return self
