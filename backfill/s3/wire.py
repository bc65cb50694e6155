"""The lean path for the three requests a backfill sends by the million.

CopyObject, ListObjectVersions and DeleteObject (for a delete marker) are
signed by sigv4.py and sent by http1.py, with the credentials, region and
endpoint that botocore resolved for the same bucket (connect.open_wire).
botocore's request pipeline costs ~1.2 ms of CPU per call; the lean path a
small fraction of it (benchmarks/RESULTS.md). Errors come back as the
ClientError botocore would raise, so that errors.classify and Pacer treat both
paths alike.
"""

from __future__ import annotations

import math
import re
import time
import urllib.parse
from typing import Any

from botocore.exceptions import ClientError

from backfill import __version__
from backfill.models import Version
from backfill.s3.http1 import Pool, Response
from backfill.s3.listing import (
    VersionPage,
    list_delimited_params,
    list_versions_params,
    parse_list_delimited,
    parse_list_versions,
)
from backfill.s3.sigv4 import EMPTY_SHA256, Signer, canonical_query, quote_key_path

# The lean CopyObject's headers for Copier._target_params' parameters (copy.py).
_HEADER_OF = {
    "StorageClass": "x-amz-storage-class",
    "ACL": "x-amz-acl",
    "ServerSideEncryption": "x-amz-server-side-encryption",
    "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id",
}

_PLAIN_SOURCE = re.compile(r"[A-Za-z0-9_.~/-]*")  # what quote(…, safe="-._~/") leaves as it is
_ERROR_FIELD = re.compile(rb"<(Code|Message|RequestId|RequestTime|ServerTime)>([^<]*)</\1>")
_USER_AGENT = f"backfill/{__version__}"
_CREDENTIALS_TTL = 5.0  # seconds between asking botocore whether the credentials need a refresh
SLOWEST_COPY = 10 * 1024 * 1024  # bytes/s that a server-side copy is assumed to manage at least


def _client_error(op: str, r: Response) -> ClientError:
    """An error response as the ClientError botocore would raise, for errors.classify."""
    fields = {k.decode(): v.decode("utf-8", "replace") for k, v in _ERROR_FIELD.findall(r.body)}
    code = fields.get("Code") or str(r.status)
    meta = {"HTTPStatusCode": r.status, "HTTPHeaders": r.headers, "RequestId": fields.get("RequestId", "")}
    error = {"Code": code, "Message": fields.get("Message", "")}
    error |= {k: fields[k] for k in ("RequestTime", "ServerTime") if k in fields}  # RequestTimeTooSkewed's
    return ClientError({"Error": error, "ResponseMetadata": meta}, op)


def copy_headers(source_bucket: str, v: Version, target: dict[str, Any]) -> dict[str, str]:
    """CopyObject's headers for one version: the pinned source, and `target` (Copier._target_params)."""
    headers = {"x-amz-copy-source": copy_source_header(source_bucket, v.key, v.version_id)}
    if v.etag:
        headers["x-amz-copy-source-if-match"] = f'"{v.etag}"'
    for name, value in target.items():
        headers[_HEADER_OF[name]] = str(value)
    return headers


def copy_source_header(bucket: str, key: str, version_id: str) -> str:
    """x-amz-copy-source, encoded as botocore encodes a CopySource dict."""
    path = f"{bucket}/{key}"
    if not _PLAIN_SOURCE.fullmatch(path):  # most keys: quote would return them unchanged, at ten times the cost
        path = urllib.parse.quote(path, safe="-._~/")
    return f"{path}?versionId={version_id}"


class Wire:
    """Signed HTTP/1.1 requests to one bucket, for the hot calls (see the module's docstring).

    `credentials` is botocore's credentials object of the bucket's session; it is
    asked for a frozen copy every few seconds, so that refreshable credentials
    (assume-role, SSO, instance roles) are renewed by botocore before they expire.
    """

    def __init__(self, pool: Pool, signer: Signer, credentials: Any, host: str, bucket_path: str) -> None:
        self.pool = pool
        self.signer = signer
        self.credentials = credentials
        self.host = host
        self.bucket_path = bucket_path  # "/bucket" (path style) or "" (virtual host)
        self.credentials_ttl = _CREDENTIALS_TTL
        self.expected_owner: str | None = None  # x-amz-expected-bucket-owner on every request
        self.expected_source_owner: str | None = None  # x-amz-source-expected-bucket-owner on CopyObject
        self.request_payer = False  # x-amz-request-payer: requester on every request (a Requester Pays source)
        self._frozen: Any = None
        self._frozen_at = -math.inf
        self._date_second = -1
        self._date = ""

    def object_path(self, key: str) -> str:
        return f"{self.bucket_path}/{quote_key_path(key)}"

    async def _keys(self) -> Any:
        now = time.monotonic()
        if now - self._frozen_at >= self.credentials_ttl:
            self._frozen = await self.credentials.get_frozen_credentials()
            self._frozen_at = now
        return self._frozen

    def _amz_date(self) -> str:
        second = int(time.time())
        if second != self._date_second:
            self._date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
            self._date_second = second
        return self._date

    def request_head(
        self,
        method: str,
        path: str,
        params: list[tuple[str, str]],
        headers: dict[str, str],
        keys: Any,
        amz_date: str,
    ) -> bytes:
        """The bytes of one signed request without a body.

        `path` is already encoded (object_path); `keys` are frozen credentials
        (access_key, secret_key, token). Every header but user-agent is signed.
        """
        signed = {"host": self.host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date, **headers}
        if self.expected_owner:
            signed["x-amz-expected-bucket-owner"] = self.expected_owner
        if self.request_payer:
            signed["x-amz-request-payer"] = "requester"
        if keys.token:
            signed["x-amz-security-token"] = keys.token
        query = canonical_query(params) if params else ""
        auth = self.signer.authorization(keys.access_key, keys.secret_key, method, path, query, signed, amz_date)
        target = f"{path}?{query}" if query else path
        lines = [f"{method} {target} HTTP/1.1"]
        lines.extend(f"{k}: {v}" for k, v in signed.items())
        lines.append(f"authorization: {auth}")
        lines.append(f"user-agent: {_USER_AGENT}")
        if method != "GET":
            lines.append("content-length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    async def send(
        self,
        op: str,
        method: str,
        path: str,
        params: list[tuple[str, str]],
        headers: dict[str, str],
        idle_timeout: float | None = None,
    ) -> Response:
        """Sign and send one request without a body; raise ClientError for an error response."""
        head = self.request_head(method, path, params, headers, await self._keys(), self._amz_date())
        # None: the pool's read timeout. A HEAD's answer has a Content-Length and no body.
        r = await self.pool.request(head, head_only=method == "HEAD", idle_timeout=idle_timeout)
        if r.status >= 300:
            raise _client_error(op, r)
        return r

    # --- the preflight's requests (bucket.py): the answers' few fields are read here, no botocore ---------

    async def head_bucket(self) -> Response:
        """HeadBucket; an error is a ClientError whose code is the status ("404", "403", "301"), as botocore's."""
        return await self.send("HeadBucket", "HEAD", self.bucket_path or "/", [], {})

    async def bucket_setting(self, op: str, name: str) -> bytes:
        """GET ?`name` of the bucket (versioning, object-lock, replication): the XML answer."""
        r = await self.send(op, "GET", self.bucket_path or "/", [(name, "")], {})
        return r.body

    async def list_one(self) -> None:
        """ListObjectsV2 of one key (an error's code says why a HeadBucket was refused)."""
        await self.send("ListObjectsV2", "GET", self.bucket_path or "/", [("list-type", "2"), ("max-keys", "1")], {})

    async def head_object(self, key: str, version_id: str) -> dict[str, str]:
        """HeadObject of one version: its response headers (lower-case names)."""
        r = await self.send("HeadObject", "HEAD", self.object_path(key), [("versionId", version_id)], {})
        return r.headers

    async def list_versions(
        self, prefix: str, key_marker: str | None, version_id_marker: str | None, max_keys: int
    ) -> VersionPage:
        params = list_versions_params(prefix, key_marker, version_id_marker, max_keys)
        r = await self.send("ListObjectVersions", "GET", self.bucket_path or "/", params, {})
        return parse_list_versions(r.body)

    async def list_delimited(self, prefix: str, max_keys: int) -> tuple[list[str], list[str], bool]:
        params = list_delimited_params(prefix, max_keys)
        r = await self.send("ListObjectsV2", "GET", self.bucket_path or "/", params, {})
        return parse_list_delimited(r.body)

    def copy_timeout(self, size: int) -> float:
        """How long a copy of `size` bytes may go without a byte from the server."""
        return self.pool.read_timeout + size / SLOWEST_COPY

    async def copy_object(self, key: str, headers: dict[str, str], size: int) -> str:
        """CopyObject (headers from copy_headers); the replica's new version ID.

        A 200 whose body is an <Error> is an error: S3 answers 200 as soon as a
        copy starts and reports a failure that happens later in the body.
        """
        if self.expected_source_owner:
            headers = {**headers, "x-amz-source-expected-bucket-owner": self.expected_source_owner}
        r = await self.send(
            "CopyObject", "PUT", self.object_path(key), [], headers, idle_timeout=self.copy_timeout(size)
        )
        if b"<Error>" in r.body[:512]:
            raise _client_error("CopyObject", r)
        return r.headers.get("x-amz-version-id", "")

    async def delete_object(self, key: str) -> str:
        r = await self.send("DeleteObject", "DELETE", self.object_path(key), [], {})
        return r.headers.get("x-amz-version-id", "")
