"""Reading an S3 Inventory report into the per-key histories a listing gives.

The reports are written here in AWS's documented format (S3 user guide, "Locating your inventory
list": manifest.json with sourceBucket, destinationBucket, version, creationTimestamp, fileFormat,
fileSchema, files[] of key/size/MD5checksum, and manifest.checksum, the MD5 of manifest.json; the
data files gzipped CSV without a header, every field quoted, keys URL-encoded with spaces as "+",
as real reports are — see dandi/s3invsync's parser tests for rows taken from one).
"""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backfill.config import Filters, MiB
from backfill.errors import UserError
from backfill.estimate import Layout, Tally
from backfill.inventory import Files, Plan, Report, check_report, key_pages, open_report, parse_age, plan
from backfill.models import Version
from backfill.pipeline.lister import key_job
from testbed.inventory import Row as R
from testbed.inventory import report as inventory_report

BUCKET = "my-important-data-bucket"


def version_of(r: R) -> Version:
    sc = "" if r.sc == "STANDARD" or r.dm else r.sc
    return Version(r.key, r.vid, 0 if r.dm else r.size, "" if r.dm else r.etag, r.lm, r.dm, sc, r.latest)


def write_inventory(root: Path, files: list[list[R]], *, source: str = BUCKET, **kw: Any) -> Path:
    """The report written under `root`, a directory standing for the inventory's destination bucket."""
    objects, mkey = inventory_report(files, source=source, **kw)
    for key, data in objects.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return root / mkey


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
    return [[version_of(r) for r in reversed(HISTORIES[k])] for k in sorted(keys)]


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
