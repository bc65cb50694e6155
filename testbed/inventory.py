"""An emulator of S3 Inventory's output: the report S3 would deliver for a bucket of all versions.

Neither SeaweedFS nor moto produces inventory reports (moto stores an inventory
configuration, it never runs it). This writes one in the documented format (S3 user guide,
"Locating your inventory list" and "Amazon S3 inventory list"): manifest.json with
sourceBucket, destinationBucket (an ARN), version, creationTimestamp (epoch ms), fileFormat,
fileSchema and files[] of key/size/MD5checksum; manifest.checksum, the MD5 of manifest.json;
gzipped CSV data files without a header row, every field quoted, booleans "true"/"false", a
delete marker's Size and ETag empty, keys URL-encoded with spaces as "+" (as real reports are:
cloud-custodian issue #1997; dandi/s3invsync's parser tests hold rows of a real report).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

FULL = (
    "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass, "
    "IsMultipartUploaded, ReplicationStatus, EncryptionStatus"
)
EPOCH = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass
class Row:
    """One version or delete marker of the report."""

    key: str
    vid: str
    t: float  # seconds after EPOCH, or set `lm` directly
    size: int = 10
    dm: bool = False
    latest: bool = False
    sc: str = "STANDARD"
    enc: str = "SSE-S3"
    etag: str = "0cc175b9c0f1b6a831c399e269772661"
    last_modified: str = ""

    @property
    def lm(self) -> str:
        if self.last_modified:
            return self.last_modified
        return (EPOCH + timedelta(seconds=self.t)).strftime("%Y-%m-%dT%H:%M:%S.") + "000Z"

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


def report(
    files: list[list[Row]],
    *,
    source: str,
    destination: str = "my-inventory-bucket",
    schema: str = FULL,
    created: datetime | None = None,
    fmt: str = "CSV",
    checksum: bool = True,
    base: str | None = None,
) -> tuple[dict[str, bytes], str]:
    """The objects of one delivered report (key in the destination bucket → bytes) and the manifest's key."""
    created = created or datetime.now(UTC) - timedelta(hours=6)
    names = [s.strip() for s in schema.split(",")]
    base = base or f"inventory/{source}/all-versions"
    objects: dict[str, bytes] = {}
    entries = []
    for i, rows in enumerate(files):
        key = f"{base}/data/{i:04d}-5b1f2c3e.csv.gz"
        text = "".join(",".join(f'"{f}"' for f in r.fields(names, source)) + "\n" for r in rows)
        blob = gzip.compress(text.encode())
        objects[key] = blob
        entries.append({"key": key, "size": len(blob), "MD5checksum": hashlib.md5(blob).hexdigest()})
    manifest = {
        "sourceBucket": source,
        "destinationBucket": f"arn:aws:s3:::{destination}",
        "version": "2016-11-30",
        "creationTimestamp": str(int(created.timestamp() * 1000)),
        "fileFormat": fmt,
        "fileSchema": schema,
        "files": entries,
    }
    mkey = f"{base}/{created:%Y-%m-%dT%H-%MZ}/manifest.json"
    data = json.dumps(manifest, indent=2).encode()
    objects[mkey] = data
    if checksum:
        objects[mkey.removesuffix("manifest.json") + "manifest.checksum"] = (
            hashlib.md5(data).hexdigest() + "\n"
        ).encode()
    return objects, mkey
