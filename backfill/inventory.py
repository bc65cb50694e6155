"""An S3 Inventory report as the source of a job, instead of ListObjectVersions.

The report (S3 user guide, "Amazon S3 Inventory" and "Locating your inventory list"):

    DEST-PREFIX/SOURCE-BUCKET/CONFIG-ID/YYYY-MM-DDTHH-MMZ/manifest.json
    DEST-PREFIX/SOURCE-BUCKET/CONFIG-ID/YYYY-MM-DDTHH-MMZ/manifest.checksum   (MD5 of manifest.json)
    DEST-PREFIX/SOURCE-BUCKET/CONFIG-ID/data/….csv.gz                         (the data files)

manifest.json holds sourceBucket, destinationBucket (an ARN), version, creationTimestamp (epoch
milliseconds: when the report began scanning the bucket), fileFormat ("CSV", "ORC" or "Parquet"),
fileSchema (for CSV the column names, comma-separated: "Bucket, Key, VersionId, IsLatest,
IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass, …") and files[] ({key, size,
MD5checksum}; the key is in the destination bucket). Each data file is a gzipped CSV without a
header row whose columns follow fileSchema, every field quoted, booleans "true"/"false", a delete
marker's Size and ETag empty. "When using the CSV file format, the key name is URL-encoded and
must be decoded before you can use it" — with spaces as "+" (cloud-custodian issue #1997), so
unquote_plus as for ListObjectVersions with encoding-type=url. VersionId and IsLatest are "not
included if the list is only for the current version of objects"; IsDeleteMarker "is
automatically added … if you've configured the report to include all versions".

Order: the documentation says nothing of the order of rows, within a data file or across files.
So each key's versions are ordered here by LastModifiedDate (oldest first; at a tie the IsLatest
one last, other ties in the reverse order of the report's rows, as ListObjectVersions lists newest
first), and shards are built so that a key is never split: a first pass over the data files
records each file's first and last key (and checks its MD5 checksum), files whose key ranges
overlap are read together, and a file or group whose rows are not sorted by key is sorted in
memory. Shards are then the key ranges (after, upto] of those file groups, so the manifest's
shard table, resume markers and every later stage work as for a listing.

"All of your objects might not appear in each inventory list … the list might not include recently
added or deleted objects" (Inventory consistency): versions written after creationTimestamp
belong to replication, like versions written after their key was listed; the refusal of a report
older than --inventory-max-age keeps that gap bounded.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
import urllib.parse
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import anyio

from backfill.errors import BackfillError, UserError
from backfill.models import Shard, Version

PAGE = 1000  # keys per page handed on, as a listing page
CHUNK = 1 << 20
REQUIRED = ("Bucket", "Key", "VersionId", "IsLatest", "IsDeleteMarker", "Size", "LastModifiedDate", "ETag")


@dataclass(frozen=True, slots=True)
class DataFile:
    key: str
    size: int
    md5: str


@dataclass(frozen=True, slots=True)
class Report:
    """A parsed manifest.json."""

    location: str  # where the manifest was read (s3:// URL or path)
    source_bucket: str
    destination_bucket: str
    created: datetime
    file_format: str
    schema: tuple[str, ...]
    files: tuple[DataFile, ...]


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a data file: the version as listing would give it, and what only an inventory says."""

    version: Version
    encryption: str = ""  # SSE-S3, SSE-C, SSE-KMS, DSSE-KMS, NOT-SSE ("" when the report lacks the field)
    replication: str = ""  # PENDING, COMPLETED, FAILED, REPLICA or ""
    multipart: bool | None = None

    @property
    def kms(self) -> bool:
        return "KMS" in self.encryption


class Files(Protocol):
    """Reads the report's objects by their key in the destination bucket."""

    async def read(self, key: str) -> bytes: ...
    def chunks(self, key: str) -> AsyncIterator[bytes]: ...


def parse_manifest(data: bytes, location: str) -> Report:
    try:
        m = json.loads(data)
        created = datetime.fromtimestamp(int(m["creationTimestamp"]) / 1000, UTC)
        files = tuple(DataFile(f["key"], int(f.get("size", 0)), str(f.get("MD5checksum", ""))) for f in m["files"])
        return Report(
            location=location,
            source_bucket=str(m["sourceBucket"]),
            destination_bucket=str(m["destinationBucket"]).removeprefix("arn:aws:s3:::"),
            created=created,
            file_format=str(m.get("fileFormat", "")),
            schema=tuple(s.strip() for s in str(m.get("fileSchema", "")).split(",") if s.strip()),
            files=files,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"--inventory {location}: not an S3 Inventory manifest.json ({type(exc).__name__}: {exc}): "
            "name the manifest.json of a report"
        ) from None


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_age(text: str) -> timedelta:
    """'7d', '36h', '90m', '3600s', '2w' (a bare number is days)."""
    m = _AGE.match(text)
    if not m:
        raise UserError(f"--inventory-max-age {text!r}: write it like 7d, 36h or 90m")
    n = float(m.group(1))
    unit = m.group(2) or "d"
    return timedelta(seconds=n * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit])


def check_report(report: Report, bucket: str, *, max_age: timedelta | None, now: datetime | None = None) -> None:
    """The refusals: a report of another bucket, without versions, in a format we cannot read, too old."""
    where = f"--inventory {report.location}"
    if report.source_bucket != bucket:
        raise UserError(
            f"{where} is a report of bucket {report.source_bucket!r}, not of the source s3://{bucket}: "
            "name the manifest.json of an inventory of the source bucket"
        )
    if report.file_format.upper() != "CSV":
        raise UserError(
            f"{where} is in {report.file_format or 'an unknown'} format: only CSV inventories are read; "
            "configure the inventory with Output format CSV"
        )
    missing = [f for f in ("VersionId", "IsLatest") if f not in report.schema]
    if missing:
        raise UserError(
            f"{where} lists current versions only (no {', '.join(missing)} field): a backfill copies every version; "
            "configure the inventory with Object versions: Include all versions"
        )
    missing = [f for f in REQUIRED if f not in report.schema]
    if missing:
        raise UserError(
            f"{where} lacks the field(s) {', '.join(missing)}: add them to the inventory configuration "
            "(Size, Last modified date and ETag are additional fields)"
        )
    now = now or datetime.now(UTC)
    if max_age is not None and now - report.created > max_age:
        age = now - report.created
        raise UserError(
            f"{where} was taken {report.created:%Y-%m-%d %H:%M} UTC, {age.days} days "
            f"{age.seconds // 3600} hours ago, older than --inventory-max-age ({_age(max_age)}): versions written "
            "since would be left to replication; use a newer report or raise --inventory-max-age"
        )


def _age(t: timedelta) -> str:
    s = t.total_seconds()
    return f"{s / 86400:g}d" if s >= 86400 else f"{s / 3600:g}h"


def _bool(text: str) -> bool:
    return text.strip().lower() == "true"


class RowReader:
    """Turns CSV rows of a report into Rows (bucket-checked, keys decoded, STANDARD as "")."""

    def __init__(self, report: Report) -> None:
        self.report = report
        idx = {name: i for i, name in enumerate(report.schema)}
        self._i = idx
        self._bucket, self._key, self._vid = idx["Bucket"], idx["Key"], idx["VersionId"]
        self._latest, self._dm, self._size = idx["IsLatest"], idx["IsDeleteMarker"], idx["Size"]
        self._lm, self._etag = idx["LastModifiedDate"], idx["ETag"]
        self._sc = idx.get("StorageClass")
        self._enc = idx.get("EncryptionStatus")
        self._rep = idx.get("ReplicationStatus")
        self._mp = idx.get("IsMultipartUploaded")
        self._width = len(report.schema)

    def row(self, f: list[str], where: str) -> Row:
        if len(f) < self._width:
            raise UserError(
                f"--inventory {self.report.location}: {where} has a row of {len(f)} fields where fileSchema "
                f"names {self._width}: the report is damaged or not of this manifest"
            )
        if f[self._bucket] != self.report.source_bucket:
            raise UserError(
                f"--inventory {self.report.location}: {where} lists bucket {f[self._bucket]!r}, "
                f"not {self.report.source_bucket!r}"
            )
        raw = f[self._key]
        key = urllib.parse.unquote_plus(raw) if ("%" in raw or "+" in raw) else raw
        dm = _bool(f[self._dm])
        sc = f[self._sc] if self._sc is not None else ""
        if dm:
            v = Version(key, f[self._vid] or "null", 0, "", f[self._lm], True, "", _bool(f[self._latest]))
        else:
            v = Version(
                key,
                f[self._vid] or "null",
                int(f[self._size] or 0),
                f[self._etag].strip('"'),
                f[self._lm],
                False,
                "" if sc in ("", "STANDARD") else sc,
                _bool(f[self._latest]),
            )
        return Row(
            v,
            encryption=f[self._enc] if self._enc is not None else "",
            replication=f[self._rep] if self._rep is not None else "",
            multipart=_bool(f[self._mp]) if self._mp is not None and f[self._mp] else None,
        )


async def _lines(chunks: AsyncIterator[bytes], digest: Any) -> AsyncIterator[list[str]]:
    """Decompressed lines of a gzip stream, in batches; `digest` sees the compressed bytes."""
    d = zlib.decompressobj(wbits=31)  # gzip framing
    rest = b""
    async for chunk in chunks:
        digest.update(chunk)
        data = rest + d.decompress(chunk)
        while d.eof and d.unused_data:  # a file of several gzip members
            tail = d.unused_data
            d = zlib.decompressobj(wbits=31)
            data += d.decompress(tail)
        lines = data.split(b"\n")
        rest = lines.pop()
        if lines:
            yield [ln.decode("utf-8") for ln in lines if ln]
    data = rest + d.flush()
    if not d.eof:
        raise EOFError("the gzip stream ends early: the file is truncated")
    if data.strip():
        yield [ln.decode("utf-8") for ln in data.split(b"\n") if ln]


async def read_rows(report: Report, files: Files, f: DataFile) -> AsyncIterator[list[Row]]:
    """The rows of one data file, in batches; checks the file's MD5 checksum at its end."""
    reader = RowReader(report)
    digest = hashlib.md5(usedforsecurity=False)
    where = f"data file {f.key}"
    try:
        async for lines in _lines(files.chunks(f.key), digest):
            yield [reader.row(r, where) for r in csv.reader(lines)]
    except (zlib.error, EOFError, gzip.BadGzipFile, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(
            f"--inventory {report.location}: {where} cannot be read ({exc}): the report is damaged"
        ) from None
    if f.md5 and digest.hexdigest() != f.md5.lower():
        raise UserError(
            f"--inventory {report.location}: {where} has MD5 {digest.hexdigest()}, the manifest says {f.md5}: "
            "the file is damaged or was replaced; use an intact report"
        )


# --- planning: which files make which shard ----------------------------------


@dataclass(slots=True)
class FileSpan:
    file: DataFile
    first: str | None = None
    last: str | None = None
    rows: int = 0
    ordered: bool = True  # rows sorted by key (a key's rows then adjacent)


@dataclass(slots=True)
class Group:
    """Data files read together: their key ranges overlap (or one file alone)."""

    spans: list[FileSpan]
    first: str
    last: str

    @property
    def ordered(self) -> bool:
        return len(self.spans) == 1 and self.spans[0].ordered


@dataclass(slots=True)
class Plan:
    report: Report
    prefix: str
    groups: list[Group] = field(default_factory=list)
    rows: int = 0  # rows under the prefix

    def shards(self) -> list[Shard]:
        """One shard per group: the key range (previous group's last key, this group's last key]."""
        out: list[Shard] = []
        for i, g in enumerate(self.groups):
            after = self.groups[i - 1].last if i else None
            upto = g.last if i < len(self.groups) - 1 else None
            out.append(Shard(i, self.prefix, after, upto))
        return out or [Shard(0, self.prefix, None, None)]

    def group_of(self, shard: Shard) -> Group | None:
        return self.groups[shard.id] if shard.id < len(self.groups) else None

    def spans_json(self) -> str:
        """The plan, to be saved with a job: which files and key ranges make each shard."""
        return json.dumps(
            [[[s.file.key, s.file.size, s.file.md5, s.first, s.last, s.ordered] for s in g.spans] for g in self.groups]
        )

    @classmethod
    def from_json(cls, report: Report, prefix: str, text: str) -> Plan:
        plan = cls(report, prefix)
        for g in json.loads(text):
            spans = [
                FileSpan(DataFile(k, size, md5), first, last, 0, ordered) for k, size, md5, first, last, ordered in g
            ]
            plan.groups.append(Group(spans, min(s.first or "" for s in spans), max(s.last or "" for s in spans)))
        return plan


async def plan(report: Report, files: Files, prefix: str, *, on_row: Callable[[Row], None] | None = None) -> Plan:
    """Read every data file once: key ranges, order, checksums; `on_row` sees each row under the prefix."""
    spans: list[FileSpan] = []
    total = 0
    for f in report.files:
        span = FileSpan(f)
        async for batch in read_rows(report, files, f):
            for r in batch:
                key = r.version.key
                if not key.startswith(prefix):
                    continue
                if span.last is not None and key < span.last:
                    span.ordered = False
                if span.first is None or key < span.first:
                    span.first = key
                if span.last is None or key > span.last:
                    span.last = key
                span.rows += 1
                if on_row is not None:
                    on_row(r)
        total += span.rows
        if span.rows:
            spans.append(span)
    spans.sort(key=lambda s: (s.first or "", s.last or ""))
    groups: list[Group] = []
    for s in spans:
        assert s.first is not None and s.last is not None
        if groups and s.first <= groups[-1].last:  # overlaps (or shares a key with) the group before
            g = groups[-1]
            g.spans.append(s)
            g.last = max(g.last, s.last)
        else:
            groups.append(Group([s], s.first, s.last))
    return Plan(report, prefix, groups, total)


def _history(rows: list[tuple[int, Version]]) -> list[Version]:
    """One key's versions, newest first (as ListObjectVersions gives them)."""

    def order(item: tuple[int, Version]) -> tuple[datetime, bool, int]:
        i, v = item
        return (datetime.fromisoformat(v.last_modified.replace("Z", "+00:00")), v.is_latest, -i)

    return [v for _, v in sorted(rows, key=order, reverse=True)]


async def key_pages(
    plan_: Plan, files: Files, shard: Shard, marker: str | None
) -> AsyncIterator[tuple[list[list[Version]], bool]]:
    """Complete key histories (each newest first) of one shard's keys after `marker` (else shard.after),
    in key order, a page of up to PAGE keys at a time, and whether the shard is exhausted: the
    inventory's counterpart of pipeline.lister.key_pages."""
    after = marker if marker is not None else shard.after
    group = plan_.group_of(shard)
    if group is None:
        yield [], True
        return
    prefix = plan_.prefix

    def wanted(key: str) -> bool:
        return key.startswith(prefix) and (after is None or key > after) and (shard.upto is None or key <= shard.upto)

    page: list[list[Version]] = []
    if group.ordered:
        current: list[tuple[int, Version]] = []
        n = 0
        async for batch in read_rows(plan_.report, files, group.spans[0].file):
            for r in batch:
                v = r.version
                if not wanted(v.key):
                    continue
                if current and current[0][1].key != v.key:
                    page.append(_history(current))
                    current = []
                    if len(page) >= PAGE:
                        yield page, False
                        page = []
                current.append((n, v))
                n += 1
        if current:
            page.append(_history(current))
        yield page, True
        return
    by_key: dict[str, list[tuple[int, Version]]] = {}
    n = 0
    for span in group.spans:
        async for batch in read_rows(plan_.report, files, span.file):
            for r in batch:
                if wanted(r.version.key):
                    by_key.setdefault(r.version.key, []).append((n, r.version))
                    n += 1
    keys = sorted(by_key)
    for i in range(0, len(keys), PAGE):
        chunk = keys[i : i + PAGE]
        yield [_history(by_key[k]) for k in chunk], i + PAGE >= len(keys)
    if not keys:
        yield [], True


# --- where the report is read from --------------------------------------------


class LocalFiles:
    """A report on disk: `root` stands for the destination bucket (keys are paths under it)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def read(self, key: str) -> bytes:
        return await anyio.Path(self.root / key).read_bytes()

    async def chunks(self, key: str) -> AsyncIterator[bytes]:
        try:
            async with await anyio.open_file(self.root / key, "rb") as fh:
                while chunk := await fh.read(CHUNK):
                    yield chunk
        except FileNotFoundError:
            raise UserError(f"--inventory: data file {key} is not under {self.root}: is the report complete?") from None


class S3Files:
    """A report in its destination bucket, read through an S3 client (aiobotocore's get_object)."""

    def __init__(self, client: Any, bucket: str, describe: Callable[[BaseException, str], BaseException]) -> None:
        self.client = client
        self.bucket = bucket
        self.describe = describe  # turns an SDK error into ours (errors.classify)

    async def read(self, key: str) -> bytes:
        chunks = [c async for c in self.chunks(key)]
        return b"".join(chunks)

    async def chunks(self, key: str) -> AsyncIterator[bytes]:
        what = f"GetObject s3://{self.bucket}/{key}"
        try:
            r = await self.client.get_object(Bucket=self.bucket, Key=key)
            body = r["Body"]
            try:
                while chunk := await body.read(CHUNK):
                    yield chunk
            finally:
                body.close()
        except Exception as exc:
            raise self.describe(exc, what) from None


def _local_root(manifest: Path, report: Report) -> Path:
    """The directory that stands for the destination bucket: the manifest's nearest ancestor under
    which the first data file's key exists (a report copied with `aws s3 sync s3://INV-BUCKET DIR`)."""
    if not report.files:
        return manifest.parent
    key = report.files[0].key
    for d in manifest.parents:
        if (d / key).is_file():
            return d
    raise UserError(
        f"--inventory {manifest}: its data file {key} is in no directory above the manifest: "
        "copy the whole inventory destination (aws s3 sync s3://INV-BUCKET DIR) and name DIR/…/manifest.json"
    )


async def open_report(
    location: str,
    *,
    client: Any = None,
    describe: Callable[[BaseException, str], BaseException] | None = None,
) -> tuple[Report, Files]:
    """Read manifest.json (and check manifest.checksum where there is one) from s3://… or a local path."""
    if location.startswith("s3://"):
        bucket, _, key = location[5:].partition("/")
        if not bucket or not key.endswith("manifest.json"):
            raise UserError(
                f"--inventory {location}: name a report's manifest.json (s3://INV-BUCKET/PATH/manifest.json)"
            )
        if client is None:
            raise UserError("--inventory s3://…: no S3 client to read it with")
        say = describe if describe is not None else (lambda exc, what: UserError(f"{what}: {exc}"))
        files: Files = S3Files(client, bucket, say)
        data = await files.read(key)
        checksum: bytes | None = None
        try:
            checksum = await files.read(key.removesuffix("manifest.json") + "manifest.checksum")
        except BackfillError:
            checksum = None  # a report delivered without one
        report = parse_manifest(data, location)
        if report.destination_bucket and report.destination_bucket != bucket:
            files = S3Files(
                client, report.destination_bucket, describe or (lambda exc, what: UserError(f"{what}: {exc}"))
            )
    else:
        path = Path(location)
        try:
            data = await anyio.Path(path).read_bytes()
        except OSError as exc:
            raise UserError(f"--inventory {location}: cannot read it ({exc.strerror or exc})") from None
        side = anyio.Path(path.with_name("manifest.checksum"))
        checksum = await side.read_bytes() if await side.is_file() else None
        report = parse_manifest(data, location)
        files = LocalFiles(_local_root(path, report))
    if checksum is not None and checksum.strip():
        want = checksum.decode("ascii", "replace").strip().lower()
        got = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if want != got:
            raise UserError(
                f"--inventory {location}: manifest.json has MD5 {got}, manifest.checksum says {want}: "
                "the manifest is damaged or incomplete"
            )
    return report, files
