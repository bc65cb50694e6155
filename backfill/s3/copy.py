"""Writes into the replica: CopyObject, multipart UploadPartCopy, delete markers, aborted uploads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
from botocore.exceptions import ClientError

from backfill.config import MAX_PART, MAX_PARTS, MIN_PART, CopyOptions
from backfill.errors import ObjectError, UserError
from backfill.models import Version
from backfill.s3.bucket import Bucket, Landed
from backfill.s3.lock import lock_params
from backfill.s3.sse_c import refused_for_key
from backfill.s3.wire import copy_headers

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


class UploadJournal(Protocol):
    """Where multipart uploads are written ahead (the manifest, through pipeline.checkpoint)."""

    async def upload_begun(self, key: str) -> str: ...
    async def upload_created(self, token: str, key: str, upload_id: str) -> None: ...
    async def upload_ended(self, token: str) -> None: ...


class Copier:
    """Writes into the replica: CopyObject, multipart UploadPartCopy, delete markers.

    Requests go through `dest` (the replica's region and principal); the source is
    only read through `source` (part layout, tags and lock settings for a multipart copy).
    `journal` records each multipart upload from before it exists until it is
    completed or aborted, so that one a crash leaves open is aborted by the next run.
    """

    def __init__(
        self,
        source: Bucket,
        dest: Bucket,
        options: CopyOptions,
        carry_lock: bool,
        journal: UploadJournal | None = None,
    ) -> None:
        self.source = source
        self.dest = dest
        self.options = options
        self.carry_lock = carry_lock
        self.journal = journal
        self.on_expired_retention: Callable[[], None] | None = None  # called per retention left out as expired

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
        """The version's retention and legal hold for its copy (s3/lock.py), an expired retention left out."""
        if not self.carry_lock:
            return {}
        h = head if head is not None else await self.source.head(v.key, v.version_id)
        p, expired = lock_params(h)
        if expired and self.on_expired_retention is not None:
            self.on_expired_retention()
        return p

    def _copy_source(self, v: Version) -> dict[str, str]:
        return {"Bucket": self.source.name, "Key": v.key, "VersionId": v.version_id}

    async def delete_marker(self, dst_key: str, landed: Callable[[], Awaitable[str | None]] | None = None) -> str:
        """Recreate a delete marker; its replica version ID. `landed`: see Pacer.run."""
        what = f"DeleteObject (delete marker) {self.dest.url(dst_key)}"
        wire = self.dest.wire
        if wire is not None:
            return await self.dest.pacer.run(
                what, lambda: wire.delete_object(dst_key), bucket=self.dest.name, who=self.dest.who, landed=landed
            )
        r = await self.dest.call(what, "delete_object", landed=_as_response(landed), Bucket=self.dest.name, Key=dst_key)
        return str(r.get("VersionId", "") or "")

    async def copy(self, v: Version, dst_key: str, landed: Callable[[], Awaitable[str | None]] | None = None) -> str:
        """Copy one object version; return the replica's new version ID.

        `landed` looks for the copy in the replica after a failure that leaves it
        unknown whether the copy happened (see Pacer.run): it is never sent twice
        when the first one landed.
        """
        if v.size > self.options.multipart_threshold:
            return await self.multipart_copy(v, dst_key, landed)
        what = f"CopyObject {self.source.url(v.key)}?versionId={v.version_id}"
        wire = self.dest.wire
        if wire is not None and not self.carry_lock and self.dest.customer_key is None:
            headers = copy_headers(self.source.name, v, self._target_params(v))
            try:
                return await self.dest.pacer.run(
                    what,
                    lambda: wire.copy_object(dst_key, headers, v.size),
                    bucket=self.dest.name,
                    who=self.dest.who,
                    landed=landed,
                )
            except ObjectError as exc:
                if not refused_for_key(exc.code):
                    raise
                source_key = await self._source_key_after(v, exc)  # SSE-C: again, on botocore, with the key
        else:
            source_key = {}
        params = {
            "Bucket": self.dest.name,
            "Key": dst_key,
            "CopySource": self._copy_source(v),
            **self._target_params(v),
            **(await self._lock_params(v)),
            **self._dest_key(),
            **source_key,
        }
        if v.etag:
            params["CopySourceIfMatch"] = f'"{v.etag}"'
        try:
            r = await self.dest.call(what, "copy_object", landed=_as_response(landed), **params)
        except ObjectError as exc:
            if source_key or not refused_for_key(exc.code):
                raise
            params.update(await self._source_key_after(v, exc))
            r = await self.dest.call(what, "copy_object", landed=_as_response(landed), **params)
        return str(r.get("VersionId", "") or "")

    def _dest_key(self) -> dict[str, Any]:
        """SSE-C for the replica's copies (--dest-sse-c-key)."""
        return self.dest.customer_key.params() if self.dest.customer_key is not None else {}

    def _source_key(self, head: dict[str, Any]) -> dict[str, Any]:
        """The copy-source customer key, for a source version that HEAD shows SSE-C encrypted."""
        if head.get("SSECustomerAlgorithm") and self.source.customer_key is not None:
            return self.source.customer_key.params(copy_source=True)
        return {}

    async def _source_key_after(self, v: Version, refusal: ObjectError) -> dict[str, Any]:
        """A copy was refused (InvalidRequest): if the source version is SSE-C encrypted, the copy-source key
        to send it again with; without a key, HEAD raises the SSE-C refusal (the version is skipped); an
        object that is no SSE-C one keeps its refusal. S3 refuses copy-source key headers for an object without
        SSE-C, so they are sent only for versions known to need them."""
        head = await self.source.head(v.key, v.version_id)
        key = self._source_key(head)
        if not key:
            raise refusal
        return key

    async def part_sizes(self, v: Version) -> list[int]:
        """The source's part layout (HeadObject PartNumber=n), or a layout from --part-size.

        A layout that UploadPartCopy cannot reproduce (a part but the last below
        5 MiB: SeaweedFS reports its 4 MiB chunks of a single-PUT object as parts)
        is replaced by the --part-size one.
        """
        first = await self.source.head(v.key, v.version_id, part_number=1)
        count = int(first.get("PartsCount") or 0)
        if count <= 1 or count > MAX_PARTS or int(first["ContentLength"]) < MIN_PART:
            return self._even_parts(v.size)
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
        if any(not MIN_PART <= n <= MAX_PART for n in sizes[:-1]):
            return self._even_parts(v.size)
        return sizes

    def _even_parts(self, total: int) -> list[int]:
        size = max(self.options.part_size, -(-total // MAX_PARTS))
        sizes = [size] * (total // size)
        if total % size or not sizes:
            sizes.append(total % size)
        return sizes

    async def multipart_copy(
        self, v: Version, dst_key: str, landed: Callable[[], Awaitable[str | None]] | None = None
    ) -> str:
        head = await self.source.head(v.key, v.version_id, checksums=True)
        sizes = await self.part_sizes(v)
        create: dict[str, Any] = {
            "Bucket": self.dest.name,
            "Key": dst_key,
            "Metadata": head.get("Metadata", {}),
            **{f: head[f] for f in _CONTENT_FIELDS if head.get(f)},
            **self._target_params(v),
            **(await self._lock_params(v, head)),
            **checksum_request(head),
            **self._dest_key(),
        }
        source_key = self._source_key(head)
        tags = await self.source.tagging(v.key, v.version_id)
        if tags:
            create["Tagging"] = tags
        what = f"{self.source.url(v.key)}?versionId={v.version_id}"
        token = await self.journal.upload_begun(dst_key) if self.journal else ""
        try:
            up = await self.dest.call(f"CreateMultipartUpload for {what}", "create_multipart_upload", **create)
        except (ObjectError, UserError):
            if self.journal:  # refused: no upload exists (after a timeout or a 5xx one might: kept)
                await self.journal.upload_ended(token)
            raise
        upload_id = up["UploadId"]
        parts: list[dict[str, Any]] = [{} for _ in sizes]
        try:
            if self.journal:
                await self.journal.upload_created(token, dst_key, upload_id)
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
                    **source_key,
                    **self._dest_key(),
                }
                if v.etag:
                    params["CopySourceIfMatch"] = f'"{v.etag}"'
                r = await self.dest.call(f"UploadPartCopy {n}/{len(sizes)} of {what}", "upload_part_copy", **params)
                result = r["CopyPartResult"]
                parts[n - 1] = {"ETag": result["ETag"], "PartNumber": n}
                parts[n - 1].update({k: result[k] for k in PART_CHECKSUMS if result.get(k)})

            async with anyio.create_task_group() as tg:
                for n in range(1, len(sizes) + 1):
                    tg.start_soon(part, n)
            done = await self.dest.call(
                f"CompleteMultipartUpload for {what}",
                "complete_multipart_upload",
                landed=_as_response(landed),
                Bucket=self.dest.name,
                Key=dst_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **self._dest_key(),
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                if await self.abort_upload(dst_key, upload_id) is not False and self.journal:
                    await self.journal.upload_ended(token)
            raise
        if self.journal:
            await self.journal.upload_ended(token)
        return str(done.get("VersionId", "") or "")

    async def abort_upload(self, dst_key: str, upload_id: str, *, paced: bool = False) -> bool | None:
        """Abort one multipart upload: True aborted now, None already gone (completed or aborted), False failed.

        `paced`: through the pacer (retried; a denial raises); else one attempt, as
        a failed copy cleans up on its way out.
        """
        params: dict[str, Any] = {"Bucket": self.dest.name, "Key": dst_key, "UploadId": upload_id}
        try:
            if paced:
                await self.dest.call(
                    f"AbortMultipartUpload {self.dest.url(dst_key)}", "abort_multipart_upload", **params
                )
            else:
                await (await self.dest.botocore()).abort_multipart_upload(**params)
        except ObjectError as exc:
            return None if exc.code == "NoSuchUpload" else False
        except ClientError as exc:
            return None if exc.response.get("Error", {}).get("Code") == "NoSuchUpload" else False
        except Exception:
            if paced:
                raise
            return False
        return True

    async def abort_leftover(self, dst_key: str, upload_id: str | None, started: float) -> int:
        """Abort an upload that an earlier run left open; how many were aborted. Raises when unsure.

        Without an upload ID (the run died before CreateMultipartUpload's answer was
        recorded), the uploads of that replica key initiated since the run sent the
        request are aborted; five minutes of slack allow for the server's clock.
        """
        ids = [upload_id] if upload_id is not None else []
        if upload_id is None:
            r = await self.dest.call(
                f"ListMultipartUploads {self.dest.url(dst_key)}",
                "list_multipart_uploads",
                Bucket=self.dest.name,
                Prefix=dst_key,
            )
            for u in r.get("Uploads", []):
                initiated = u.get("Initiated")
                if u.get("Key") == dst_key and (initiated is None or initiated.timestamp() >= started - 300):
                    ids.append(u["UploadId"])
        aborted = 0
        for uid in ids:
            outcome = await self.abort_upload(dst_key, uid, paced=True)
            if outcome is False:
                raise ObjectError(f"AbortMultipartUpload {uid} of {self.dest.url(dst_key)} failed")
            aborted += outcome is True
        return aborted


def _as_response(landed: Callable[[], Awaitable[str | None]] | None) -> Landed | None:
    """A `landed` check that answers with a replica version ID, shaped as botocore's response."""
    if landed is None:
        return None
    check = landed

    async def as_response() -> dict[str, str] | None:
        vid = await check()
        return None if vid is None else {"VersionId": vid}

    return as_response


PART_CHECKSUMS = ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1", "ChecksumSHA256")
_FULL_OBJECT_ALGORITHMS = frozenset({"CRC32", "CRC32C", "CRC64NVME"})


def checksum_request(head: dict[str, Any]) -> dict[str, str]:
    """CreateMultipartUpload's checksum for a copy of the version `head` describes.

    A single CopyObject keeps the source's checksum algorithm by itself ("If the CopyObject request does
    not include this x-amz-checksum-algorithm header, the checksum algorithm will be copied from the source
    object", S3 API reference, CopyObject); a multipart copy has a checksum only if CreateMultipartUpload
    asks for one. Asked: the source's algorithm and type — a full-object CRC is the same whatever the
    parts, a composite one the same for the same part layout, which the copy reproduces — or, for a source
    without one (or with a full-object SHA, which no multipart upload can have), CRC64NVME over the full
    object, S3's default. The replica then has a checksum that survives encryption, for verify and for
    recognising our own copies (pipeline/evidence.py).
    """
    for name in PART_CHECKSUMS:
        value = head.get(name)
        if not value:
            continue
        alg = name.removeprefix("Checksum")
        kind = str(head.get("ChecksumType") or ("COMPOSITE" if "-" in str(value) else "FULL_OBJECT"))
        if kind == "FULL_OBJECT" and alg not in _FULL_OBJECT_ALGORITHMS:
            break
        return {"ChecksumAlgorithm": alg, "ChecksumType": kind}
    return {"ChecksumAlgorithm": "CRC64NVME", "ChecksumType": "FULL_OBJECT"}
