"""Reading an S3 Inventory report into the per-key histories a listing gives.

The reports are written here in AWS's documented format (S3 user guide, "Locating your inventory
list": manifest.json with sourceBucket, destinationBucket, version, creationTimestamp, fileFormat,
fileSchema, files[] of key/size/MD5checksum, and manifest.checksum, the MD5 of manifest.json; the
data files gzipped CSV without a header, every field quoted, keys URL-encoded with spaces as "+",
as real reports are — see dandi/s3invsync's parser tests for rows taken from one).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backfill.config import Filters, MiB
from backfill.errors import UserError
from backfill.estimate import Layout, Tally
from backfill.inventory import Files, Plan, Report, check_report, key_pages, open_report, parse_age, plan
from backfill.models import Version
from backfill.pipeline.lister import key_job

FULL = (
    "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass, "
    "IsMultipartUploaded, ReplicationStatus, EncryptionStatus"
)
BUCKET = "my-important-data-bucket"


@dataclass
class R:
    """A row: one version or delete marker."""

    key: str
    vid: str
    t: int  # seconds after 2026-11-01
    size: int = 10
    dm: bool = False
    latest: bool = False
    sc: str = "STANDARD"
    enc: str = "SSE-S3"
    etag: str = "0cc175b9c0f1b6a831c399e269772661"

    @property
    def lm(self) -> str:
        return (datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=self.t)).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def fields(self, schema: Sequence[str], bucket: str) -> list[str]:
        values = {
            "Bucket": bucket,
            "Key": urllib.parse.quote_plus(self.key, safe="/"),
            "VersionId": self.vid,
            "IsLatest": "true" if self.latest else "false",
            "IsDeleteMarker": "true" if self.dm else "false",
            "Size": "" if self.dm else str(self.size),
            "LastModifiedDate": self.lm,
            "ETag": "" if self.dm else self.etag,
            "StorageClass": "" if self.dm else self.sc,
            "IsMultipartUploaded": "" if self.dm else ("true" if "-" in self.etag else "false"),
            "ReplicationStatus": "",
            "EncryptionStatus": "" if self.dm else self.enc,
        }
        return [values[s] for s in schema]

    def version(self) -> Version:
        sc = "" if self.sc == "STANDARD" or self.dm else self.sc
        return Version(
            self.key,
            self.vid,
            0 if self.dm else self.size,
            "" if self.dm else self.etag,
            self.lm,
            self.dm,
            sc,
            self.latest,
        )


def write_inventory(
    root: Path,
    files: list[list[R]],
    *,
    schema: str = FULL,
    created: datetime | None = None,
    fmt: str = "CSV",
    source: str = BUCKET,
    checksum: bool = True,
) -> Path:
    """An inventory destination bucket under `root` (a directory standing for it); the manifest's path."""
    created = created or datetime.now(UTC) - timedelta(hours=6)
    names = [s.strip() for s in schema.split(",")]
    base = f"inventory/{source}/all-versions"
    entries = []
    for i, rows in enumerate(files):
        key = f"{base}/data/{i:04d}-5b1f2c3e.csv.gz"
        text = "".join(",".join(f'"{f}"' for f in r.fields(names, source)) + "\n" for r in rows)
        blob = gzip.compress(text.encode())
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(blob)
        entries.append({"key": key, "size": len(blob), "MD5checksum": hashlib.md5(blob).hexdigest()})
    manifest = {
        "sourceBucket": source,
        "destinationBucket": "arn:aws:s3:::my-inventory-bucket",
        "version": "2016-11-30",
        "creationTimestamp": str(int(created.timestamp() * 1000)),
        "fileFormat": fmt,
        "fileSchema": schema,
        "files": entries,
    }
    mdir = root / base / created.strftime("%Y-%m-%dT%H-%MZ")
    mdir.mkdir(parents=True, exist_ok=True)
    data = json.dumps(manifest, indent=2).encode()
    (mdir / "manifest.json").write_bytes(data)
    if checksum:
        (mdir / "manifest.checksum").write_text(hashlib.md5(data).hexdigest() + "\n")
    return mdir / "manifest.json"


# Histories, oldest first, of keys that need decoding and ordering.
HISTORIES: dict[str, list[R]] = {
    "a b/one.txt": [
        R("a b/one.txt", "v1", 1),
        R("a b/one.txt", "v2", 2),
        R("a b/one.txt", "d3", 3, dm=True, latest=True),
    ],
    "c+d": [
        R("c+d", "v1", 5, sc="STANDARD_IA"),
        R("c+d", "v2", 9, latest=True, etag="0123456789abcdef0123456789abcdef-3"),
    ],
    "logs/2026/é.log": [R("logs/2026/é.log", "only", 4, latest=True, enc="SSE-KMS")],
    "z%41": [R("z%41", "v1", 7), R("z%41", "d1", 8, dm=True), R("z%41", "v3", 10, latest=True)],
}


def expected_pages(keys: list[str]) -> list[list[Version]]:
    return [[r.version() for r in reversed(HISTORIES[k])] for k in sorted(keys)]


async def all_histories(p: Plan, files: Files) -> list[list[Version]]:
    out: list[list[Version]] = []
    for shard in p.shards():
        async for complete, _done in key_pages(p, files, shard, None):
            out.extend(complete)
    return out


@pytest.mark.anyio
async def test_a_report_gives_the_histories_a_listing_gives(tmp_path: Path) -> None:
    # File 0 lists newest first per key, sorted by key (as ListObjectVersions would);
    # file 1 lists its keys out of order and each key's versions oldest first.
    f0 = [r for k in sorted(["a b/one.txt", "c+d"]) for r in reversed(HISTORIES[k])]
    f1 = [*HISTORIES["z%41"], *HISTORIES["logs/2026/é.log"]]
    manifest = write_inventory(tmp_path, [f0, f1])
    report, files = await open_report(str(manifest))
    check_report(report, BUCKET, max_age=timedelta(days=2))
    p = await plan(report, files, "")
    assert p.rows == 9
    assert [len(g.spans) for g in p.groups] == [1, 1] and not p.groups[1].ordered
    shards = p.shards()
    assert [(s.after, s.upto) for s in shards] == [(None, "c+d"), ("c+d", None)]
    got = await all_histories(p, files)
    assert got == expected_pages(list(HISTORIES))
    # Through the lister's own key_job: oldest first, delete markers at their place
    job = key_job(0, got[0], src_prefix="", latest_only=False, filters=Filters())
    assert job is not None
    assert [(it.seq, it.version.version_id, it.version.is_delete_marker) for it in job.items] == [
        (0, "v1", False),
        (1, "v2", False),
        (2, "d3", True),
    ]
    assert got[1][0].storage_class == "" and got[1][1].storage_class == "STANDARD_IA"


@pytest.mark.anyio
async def test_files_whose_key_ranges_overlap_are_one_shard_and_a_key_is_never_split(tmp_path: Path) -> None:
    # "c+d"'s two versions are in two files: the files must be read together.
    ab, cd, z, e = (HISTORIES[k] for k in ("a b/one.txt", "c+d", "z%41", "logs/2026/é.log"))
    manifest = write_inventory(tmp_path, [[*ab, cd[0]], [cd[1], *e], z])
    report, files = await open_report(str(manifest))
    p = await plan(report, files, "")
    assert [len(g.spans) for g in p.groups] == [2, 1]
    assert await all_histories(p, files) == expected_pages(list(HISTORIES))


@pytest.mark.anyio
async def test_a_prefix_and_a_resume_marker_select_keys_as_listing_does(tmp_path: Path) -> None:
    rows = [r for k in sorted(HISTORIES) for r in reversed(HISTORIES[k])]
    manifest = write_inventory(tmp_path, [rows])
    report, files = await open_report(str(manifest))
    p = await plan(report, files, "logs/")
    assert p.rows == 1 and await all_histories(p, files) == expected_pages(["logs/2026/é.log"])
    p = await plan(report, files, "")
    (shard,) = p.shards()
    pages = [c async for c, _d in key_pages(p, files, shard, "c+d")]  # resume after "c+d"
    assert [h for c in pages for h in c] == expected_pages(["logs/2026/é.log", "z%41"])


@pytest.mark.anyio
async def test_a_tie_in_time_puts_the_latest_version_last(tmp_path: Path) -> None:
    rows = [R("k", "b", 1, latest=True), R("k", "a", 1), R("k", "c", 0)]
    manifest = write_inventory(tmp_path, [rows])
    report, files = await open_report(str(manifest))
    p = await plan(report, files, "")
    (history,) = await all_histories(p, files)
    assert [x.version_id for x in history] == ["b", "a", "c"]  # newest first


@pytest.mark.anyio
async def test_the_plan_tallies_the_estimate_with_the_reports_encryption(tmp_path: Path) -> None:
    rows = [r for k in sorted(HISTORIES) for r in reversed(HISTORIES[k])]
    big = R("big", "v1", 1, size=12 * MiB, latest=True, enc="SSE-KMS", etag="0123456789abcdef0123456789abcdef-2")
    manifest = write_inventory(tmp_path, [[*rows, big]])
    report, files = await open_report(str(manifest))
    tally = Tally(Layout(multipart_threshold=8 * MiB, part_size=5 * MiB))
    await plan(report, files, "", on_row=lambda r: tally.add(r.version, source_kms=r.kms))
    req = tally.requests()
    assert tally.versions == 10 and tally.delete_markers == 2
    assert req.copy == 7 and req.delete == 2 and req.upload_part_copy == 2 and req.head == 3
    assert req.kms == 1 + 2  # é.log's CopyObject, big's two UploadPartCopy


@pytest.mark.anyio
async def test_the_refusals(tmp_path: Path) -> None:
    rows = [r for k in sorted(HISTORIES) for r in reversed(HISTORIES[k])]

    async def report_of(name: str, **kw: object) -> Report:
        manifest = write_inventory(tmp_path / name, [rows], **kw)  # type: ignore[arg-type]
        return (await open_report(str(manifest)))[0]

    other = await report_of("other", source="someone-elses-bucket")
    with pytest.raises(UserError, match=r"report of bucket 'someone-elses-bucket', not of the source"):
        check_report(other, BUCKET, max_age=None)
    current = await report_of(
        "current", schema="Bucket, Key, Size, LastModifiedDate, ETag, StorageClass, IsMultipartUploaded"
    )
    with pytest.raises(
        UserError, match=r"current versions only \(no VersionId, IsLatest field\).*Include all versions"
    ):
        check_report(current, BUCKET, max_age=None)
    old = await report_of("old", created=datetime.now(UTC) - timedelta(days=9))
    check_report(old, BUCKET, max_age=timedelta(days=10))
    with pytest.raises(UserError, match=r"9 days .* older than --inventory-max-age \(7d\)"):
        check_report(old, BUCKET, max_age=parse_age("7d"))
    orc = await report_of("orc", fmt="ORC")
    with pytest.raises(UserError, match="only CSV inventories"):
        check_report(orc, BUCKET, max_age=None)


@pytest.mark.anyio
async def test_a_damaged_report_is_refused(tmp_path: Path) -> None:
    rows = [r for k in sorted(HISTORIES) for r in reversed(HISTORIES[k])]
    manifest = write_inventory(tmp_path, [rows])
    report, files = await open_report(str(manifest))
    data = tmp_path / report.files[0].key
    blob = data.read_bytes()
    data.write_bytes(gzip.compress(gzip.decompress(blob).replace(b"v1", b"v9")))
    with pytest.raises(UserError, match=r"has MD5 .* the manifest says"):
        await plan(report, files, "")
    data.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError, match=r"cannot be read"):
        await plan(report, files, "")
    manifest.write_text(manifest.read_text().replace("2016-11-30", "2016-11-31"))
    with pytest.raises(UserError, match=r"manifest.checksum says"):
        await open_report(str(manifest))
    manifest.write_text("{}")
    (manifest.parent / "manifest.checksum").unlink()
    with pytest.raises(UserError, match=r"not an S3 Inventory manifest\.json"):
        await open_report(str(manifest))


@pytest.mark.anyio
async def test_a_local_report_needs_its_data_files(tmp_path: Path) -> None:
    manifest = write_inventory(tmp_path / "bucket", [[R("k", "v", 1, latest=True)]])
    lone = tmp_path / "elsewhere" / "manifest.json"
    lone.parent.mkdir()
    lone.write_bytes(manifest.read_bytes())
    with pytest.raises(UserError, match="in no directory above the manifest"):
        await open_report(str(lone))
    with pytest.raises(UserError, match="cannot read it"):
        await open_report(str(tmp_path / "nope" / "manifest.json"))
    with pytest.raises(UserError, match=r"name a report.s manifest\.json"):
        await open_report("s3://inv-bucket/path/")


def test_inventory_max_age_is_read_like_a_duration() -> None:
    assert parse_age("7d") == timedelta(days=7) == parse_age("7")
    assert parse_age("36h") == timedelta(hours=36)
    assert parse_age("90m") == timedelta(minutes=90)
    assert parse_age("2w") == timedelta(weeks=2)
    with pytest.raises(UserError, match="write it like 7d"):
        parse_age("a week")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
