"""The only module that talks to S3.

Clients come from aioboto3 sessions (AWS CLI conventions: profiles, regions,
AWS_ENDPOINT_URL). botocore's own retries are off; pacing.Pacer retries.

ListObjectVersions is read from the raw XML (a `before-parse` hook), because
botocore splits <Version> and <DeleteMarker> into two lists and so loses the
order of a key's history, which a replay needs.
"""

from __future__ import annotations

import contextlib
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aioboto3
import anyio
from aiobotocore.config import AioConfig

from backfill.config import MAX_PARTS, CopyOptions, Side
from backfill.errors import ObjectError, UserError, classify
from backfill.models import Version
from backfill.pacing import Pacer

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_ENTRIES = "BackfillEntries"

# Headers that CreateMultipartUpload does not inherit and a copy must carry itself.
_CONTENT_FIELDS = (
    "ContentType",
    "CacheControl",
    "ContentDisposition",
    "ContentEncoding",
    "ContentLanguage",
    "Expires",
    "WebsiteRedirectLocation",
)


@dataclass(frozen=True, slots=True)
class VersionPage:
    entries: list[Version]  # document order: keys ascending, each key newest first
    truncated: bool
    next_key_marker: str | None
    next_version_id_marker: str | None


def _text(el: ET.Element, tag: str) -> str:
    child = el.find(_NS + tag)
    if child is None:
        child = el.find(tag)
    return child.text or "" if child is not None else ""


def parse_list_versions(body: bytes) -> VersionPage:
    """Parse a ListVersionsResult body, keeping versions and delete markers interleaved."""
    root = ET.fromstring(body)  # noqa: S314 - S3's response, not untrusted input
    url = _text(root, "EncodingType") == "url"

    def dec(s: str) -> str:
        return urllib.parse.unquote_plus(s) if url else s

    entries: list[Version] = []
    for el in root:
        tag = el.tag.rpartition("}")[2]
        if tag == "Version":
            entries.append(
                Version(
                    key=dec(_text(el, "Key")),
                    version_id=_text(el, "VersionId") or "null",
                    size=int(_text(el, "Size") or 0),
                    etag=_text(el, "ETag").strip('"'),
                    last_modified=_text(el, "LastModified"),
                    storage_class=_storage_class(_text(el, "StorageClass")),
                    is_latest=_text(el, "IsLatest") == "true",
                )
            )
        elif tag == "DeleteMarker":
            entries.append(
                Version(
                    key=dec(_text(el, "Key")),
                    version_id=_text(el, "VersionId") or "null",
                    size=0,
                    etag="",
                    last_modified=_text(el, "LastModified"),
                    is_delete_marker=True,
                    is_latest=_text(el, "IsLatest") == "true",
                )
            )
    truncated = _text(root, "IsTruncated") == "true"
    nkm = _text(root, "NextKeyMarker")
    nvm = _text(root, "NextVersionIdMarker")
    return VersionPage(_history_order(entries), truncated, dec(nkm) if nkm else None, nvm or None)


def _history_order(entries: list[Version]) -> list[Version]:
    """Entries grouped by key (ascending), each key newest first.

    S3 interleaves <Version> and <DeleteMarker> in history order; that order is
    kept as it is (timestamps can tie: SeaweedFS stamps whole seconds). A server
    that lists all versions before all delete markers (moto) splits a key into
    two runs; only then are a key's runs merged by LastModified.
    """
    seen: set[str] = set()
    previous: str | None = None
    for v in entries:
        if v.key != previous:
            if v.key in seen:
                break
            seen.add(v.key)
            previous = v.key
    else:
        return entries
    groups: dict[str, list[Version]] = {}
    for v in entries:
        groups.setdefault(v.key, []).append(v)
    out: list[Version] = []
    for key in sorted(groups):
        out.extend(sorted(groups[key], key=lambda v: _timestamp(v.last_modified), reverse=True))
    return out


def _timestamp(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() if ts else 0.0


def _storage_class(sc: str) -> str:
    return "" if sc in ("", "STANDARD") else sc


_EMPTY_RESULT = b'<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></ListVersionsResult>'


def _capture_versions_body(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any) -> None:
    """Parse a successful ListObjectVersions body ourselves, and spare botocore the same work.

    botocore's parser costs ~76 µs per version and loses the history order; ours
    keeps it. botocore is handed an empty result (errors are left to it).
    """
    if response_dict.get("status_code") == 200 and response_dict.get("body"):
        customized_response_dict[_ENTRIES] = parse_list_versions(response_dict["body"])
        response_dict["body"] = _EMPTY_RESULT


def _botocore_config(side: Side, pool: int) -> AioConfig:
    s3: dict[str, Any] = {}
    if side.endpoint_url:
        s3["addressing_style"] = "path"  # local and S3-compatible servers rarely do virtual hosts
    return AioConfig(
        retries={"total_max_attempts": 1, "mode": "standard"},  # Pacer retries, once, with jitter
        max_pool_connections=pool,
        connect_timeout=10,
        read_timeout=600,  # a large CopyObject answers only when done
        tcp_keepalive=True,
        s3=s3,
    )


class Bucket:
    """One bucket seen through one principal's client, with the pacer for its requests."""

    def __init__(
        self, client: Any, name: str, label: str, who: str, pacer: Pacer, list_pacer: Pacer | None = None
    ) -> None:
        self.client = client
        self.name = name
        self.label = label  # "source" / "replica", for messages
        self.who = who  # "profile X" or "the default credentials", for messages
        self.pacer = pacer  # object requests
        self.list_pacer = list_pacer or pacer  # listings

    async def _call(self, what: str, op: str, /, pacer: Pacer | None = None, **params: Any) -> Any:
        fn = getattr(self.client, op)
        return await (pacer or self.pacer).run(what, lambda: fn(**params), bucket=self.name, who=self.who)

    def url(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    # --- bucket-level checks ---------------------------------------------------

    async def check_access(self) -> str | None:
        """HeadBucket: the bucket's region, or one clear line for a missing bucket or a denial."""
        try:
            r = await self.client.head_bucket(Bucket=self.name)
        except Exception as exc:
            hdrs = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPHeaders", {})
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in ("301", "PermanentRedirect", "400") and hdrs.get("x-amz-bucket-region"):
                return str(hdrs["x-amz-bucket-region"])  # elsewhere: the caller reopens there
            err = classify(
                exc, what=f"HeadBucket {self.label} s3://{self.name}", bucket=self.name, profile_hint=self.who
            )
            if code in ("404", "NoSuchBucket"):
                raise UserError(
                    f"{self.label} bucket s3://{self.name} does not exist (or is in another partition): check the name"
                ) from None
            if code in ("403", "AccessDenied"):
                raise UserError(
                    f"access denied to {self.label} bucket s3://{self.name} with {self.who}: grant "
                    "s3:ListBucket (and the copy permissions), or use other credentials"
                ) from None
            raise err from exc
        region = r.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
        return str(region) if region else None

    async def versioning(self) -> str:
        r = await self._call(f"GetBucketVersioning s3://{self.name}", "get_bucket_versioning", Bucket=self.name)
        return str(r.get("Status", "") or "")

    async def object_lock_enabled(self) -> bool:
        try:
            r = await self.client.get_object_lock_configuration(Bucket=self.name)
        except Exception:
            return False
        return bool(r.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")

    # --- listing -------------------------------------------------------------

    async def list_versions(
        self, prefix: str, key_marker: str | None, version_id_marker: str | None, max_keys: int = 1000
    ) -> VersionPage:
        params: dict[str, Any] = {"Bucket": self.name, "Prefix": prefix, "MaxKeys": max_keys}
        if key_marker:
            params["KeyMarker"] = key_marker
            if version_id_marker:
                params["VersionIdMarker"] = version_id_marker
        r = await self._call(
            f"ListObjectVersions s3://{self.name}/{prefix}", "list_object_versions", pacer=self.list_pacer, **params
        )
        page: VersionPage = r[_ENTRIES]
        return page

    async def list_delimited(self, prefix: str, max_keys: int = 1000) -> tuple[list[str], list[str], bool]:
        """One page of ListObjectsV2 with Delimiter='/': (common prefixes, keys, truncated)."""
        r = await self._call(
            f"ListObjectsV2 s3://{self.name}/{prefix}",
            "list_objects_v2",
            pacer=self.list_pacer,
            Bucket=self.name,
            Prefix=prefix,
            Delimiter="/",
            MaxKeys=max_keys,
        )
        cps = [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        keys = [c["Key"] for c in r.get("Contents", [])]
        return cps, keys, bool(r.get("IsTruncated"))

    # --- reads of one version ----------------------------------------------

    async def head(
        self, key: str, version_id: str, part_number: int | None = None, *, checksums: bool = False
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"Bucket": self.name, "Key": key, "VersionId": version_id}
        if part_number is not None:
            params["PartNumber"] = part_number
        if checksums:
            params["ChecksumMode"] = "ENABLED"
        r: dict[str, Any] = await self._call(f"HeadObject {self.url(key)}", "head_object", **params)
        return r

    async def get_body(self, key: str, version_id: str) -> Any:
        """The streaming body of one version (the caller reads and closes it)."""
        r = await self._call(
            f"GetObject {self.url(key)}", "get_object", Bucket=self.name, Key=key, VersionId=version_id
        )
        return r["Body"]

    async def tagging(self, key: str, version_id: str) -> str:
        r = await self._call(
            f"GetObjectTagging {self.url(key)}", "get_object_tagging", Bucket=self.name, Key=key, VersionId=version_id
        )
        return urllib.parse.urlencode([(t["Key"], t["Value"]) for t in r.get("TagSet", [])])


class Copier:
    """Writes into the replica: CopyObject, multipart UploadPartCopy, delete markers.

    Requests go through `dest` (the replica's region and principal); the source is
    only read through `source` (part layout, tags and lock settings for a multipart copy).
    """

    def __init__(self, source: Bucket, dest: Bucket, options: CopyOptions, carry_lock: bool) -> None:
        self.source = source
        self.dest = dest
        self.options = options
        self.carry_lock = carry_lock

    def _target_params(self, v: Version) -> dict[str, Any]:
        p: dict[str, Any] = {}
        if v.storage_class:
            p["StorageClass"] = v.storage_class
        if self.options.acl:
            p["ACL"] = self.options.acl
        if self.options.sse_kms_key_id:
            p["ServerSideEncryption"] = "aws:kms"
            p["SSEKMSKeyId"] = self.options.sse_kms_key_id
        return p

    async def _lock_params(self, v: Version, head: dict[str, Any] | None = None) -> dict[str, Any]:
        if not self.carry_lock:
            return {}
        h = head if head is not None else await self.source.head(v.key, v.version_id)
        p: dict[str, Any] = {}
        if h.get("ObjectLockMode"):
            p["ObjectLockMode"] = h["ObjectLockMode"]
            p["ObjectLockRetainUntilDate"] = h["ObjectLockRetainUntilDate"]
        if h.get("ObjectLockLegalHoldStatus"):
            p["ObjectLockLegalHoldStatus"] = h["ObjectLockLegalHoldStatus"]
        return p

    def _copy_source(self, v: Version) -> dict[str, str]:
        return {"Bucket": self.source.name, "Key": v.key, "VersionId": v.version_id}

    async def delete_marker(self, dst_key: str) -> str:
        r = await self.dest._call(
            f"DeleteObject (delete marker) {self.dest.url(dst_key)}",
            "delete_object",
            Bucket=self.dest.name,
            Key=dst_key,
        )
        return str(r.get("VersionId", "") or "")

    async def copy(self, v: Version, dst_key: str) -> str:
        """Copy one object version; return the replica's new version ID."""
        if v.size > self.options.multipart_threshold:
            return await self.multipart_copy(v, dst_key)
        params = {
            "Bucket": self.dest.name,
            "Key": dst_key,
            "CopySource": self._copy_source(v),
            **self._target_params(v),
            **(await self._lock_params(v)),
        }
        if v.etag:
            params["CopySourceIfMatch"] = f'"{v.etag}"'
        r = await self.dest._call(
            f"CopyObject {self.source.url(v.key)}?versionId={v.version_id}", "copy_object", **params
        )
        return str(r.get("VersionId", "") or "")

    async def part_sizes(self, v: Version) -> list[int]:
        """The source's part layout (HeadObject PartNumber=n), or a layout from --part-size."""
        first = await self.source.head(v.key, v.version_id, part_number=1)
        count = int(first.get("PartsCount") or 0)
        if count <= 1:
            size = max(self.options.part_size, -(-v.size // MAX_PARTS))
            sizes = [size] * (v.size // size)
            if v.size % size or not sizes:
                sizes.append(v.size % size)
            return sizes
        sizes = [0] * count
        sizes[0] = int(first["ContentLength"])

        async def one(n: int) -> None:
            h = await self.source.head(v.key, v.version_id, part_number=n)
            sizes[n - 1] = int(h["ContentLength"])

        limit = anyio.Semaphore(16)

        async def bounded(n: int) -> None:
            async with limit:
                await one(n)

        async with anyio.create_task_group() as tg:
            for n in range(2, count + 1):
                tg.start_soon(bounded, n)
        if sum(sizes) != v.size:
            raise ObjectError(f"part sizes of {self.source.url(v.key)} add up to {sum(sizes)}, not {v.size}")
        return sizes

    async def multipart_copy(self, v: Version, dst_key: str) -> str:
        head = await self.source.head(v.key, v.version_id)
        sizes = await self.part_sizes(v)
        create: dict[str, Any] = {
            "Bucket": self.dest.name,
            "Key": dst_key,
            "Metadata": head.get("Metadata", {}),
            **{f: head[f] for f in _CONTENT_FIELDS if head.get(f)},
            **self._target_params(v),
            **(await self._lock_params(v, head)),
        }
        tags = await self.source.tagging(v.key, v.version_id)
        if tags:
            create["Tagging"] = tags
        what = f"{self.source.url(v.key)}?versionId={v.version_id}"
        up = await self.dest._call(f"CreateMultipartUpload for {what}", "create_multipart_upload", **create)
        upload_id = up["UploadId"]
        etags: list[str] = [""] * len(sizes)
        try:
            offsets = [sum(sizes[:i]) for i in range(len(sizes))]

            async def part(n: int) -> None:
                start = offsets[n - 1]
                end = start + sizes[n - 1] - 1
                params: dict[str, Any] = {
                    "Bucket": self.dest.name,
                    "Key": dst_key,
                    "UploadId": upload_id,
                    "PartNumber": n,
                    "CopySource": self._copy_source(v),
                    "CopySourceRange": f"bytes={start}-{end}",
                }
                if v.etag:
                    params["CopySourceIfMatch"] = f'"{v.etag}"'
                r = await self.dest._call(f"UploadPartCopy {n}/{len(sizes)} of {what}", "upload_part_copy", **params)
                etags[n - 1] = r["CopyPartResult"]["ETag"]

            async with anyio.create_task_group() as tg:
                for n in range(1, len(sizes) + 1):
                    tg.start_soon(part, n)
            done = await self.dest._call(
                f"CompleteMultipartUpload for {what}",
                "complete_multipart_upload",
                Bucket=self.dest.name,
                Key=dst_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"ETag": e, "PartNumber": i + 1} for i, e in enumerate(etags)]},
            )
        except BaseException:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self.dest.client.abort_multipart_upload(Bucket=self.dest.name, Key=dst_key, UploadId=upload_id)
            raise
        return str(done.get("VersionId", "") or "")


def who(profile: str | None) -> str:
    return f"profile {profile}" if profile else "the default credentials"


def _session(profile: str | None) -> aioboto3.Session:
    try:
        return aioboto3.Session(profile_name=profile)
    except Exception as exc:
        raise classify(exc, what="profile") from exc


@contextlib.asynccontextmanager
async def open_bucket(
    side: Side, label: str, pacer: Pacer, pool: int, list_pacer: Pacer | None = None
) -> AsyncIterator[Bucket]:
    """A Bucket for one side, checked with HeadBucket, in the bucket's own region.

    Without --*-region the client starts in the profile's region (or us-east-1)
    and moves once if HeadBucket says the bucket lives elsewhere.
    """
    session = _session(side.profile)
    region = side.region or session.region_name or "us-east-1"
    for _attempt in range(2):
        try:
            ctx = session.client(
                "s3", region_name=region, endpoint_url=side.endpoint_url, config=_botocore_config(side, pool)
            )
            client = await ctx.__aenter__()
        except Exception as exc:
            raise classify(exc, what=f"{label} client") from exc
        try:
            client.meta.events.register("before-parse.s3.ListObjectVersions", _capture_versions_body)
            bucket = Bucket(client, side.url.bucket, label, who(side.profile), pacer, list_pacer)
            actual = await bucket.check_access()
            if actual and actual != region and not side.region:
                region = actual
                continue  # reopen in the bucket's region (closed by the finally below)
            if actual and actual != region:
                raise UserError(
                    f"{label} bucket s3://{side.url.bucket} is in {actual}, not {region}: "
                    f"fix --{'source' if label == 'source' else 'dest'}-region or leave it out"
                )
            yield bucket
            return
        finally:
            with anyio.CancelScope(shield=True):
                await ctx.__aexit__(None, None, None)
    raise UserError(f"cannot settle the region of {label} bucket s3://{side.url.bucket}")
