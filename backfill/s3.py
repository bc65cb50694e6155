"""The only module that talks to S3.

Clients come from aioboto3 sessions (AWS CLI conventions: profiles, regions,
AWS_ENDPOINT_URL). botocore's own retries are off; pacing.Pacer retries.

The three requests a backfill sends by the million (CopyObject,
ListObjectVersions, DeleteObject for a delete marker) take a lean path, `Wire`:
signed by sigv4.py and sent by http1.py, with the credentials, region and
endpoint that botocore resolved for the same bucket. botocore's request
pipeline costs ~1.2 ms of CPU per call; the lean path a small fraction of it
(benchmarks/RESULTS.md). Everything else, and every request when
`--http botocore` is given, goes through aioboto3.

ListObjectVersions is read from the raw XML (a `before-parse` hook), because
botocore splits <Version> and <DeleteMarker> into two lists and so loses the
order of a key's history, which a replay needs.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
import re
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import aioboto3
import anyio
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from botocore.exceptions import ClientError
from botocore.httpsession import get_cert_path

from backfill import __version__
from backfill.config import MAX_PART, MAX_PARTS, MIN_PART, CopyOptions, Side
from backfill.errors import ObjectError, RetryableError, UserError, classify
from backfill.http1 import Pool, Response
from backfill.models import Version
from backfill.pacing import Pacer, RetryPolicy
from backfill.sigv4 import EMPTY_SHA256, Signer, canonical_query, quote_key_path

_ENTRIES = "BackfillEntries"

# The lean CopyObject's headers for Copier._target_params' parameters.
_HEADER_OF = {
    "StorageClass": "x-amz-storage-class",
    "ACL": "x-amz-acl",
    "ServerSideEncryption": "x-amz-server-side-encryption",
    "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id",
}

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


_ENTRY_START = re.compile(r"<(Version|DeleteMarker)>")
# The fields of a <Version>/<DeleteMarker> that a copy needs; others (Owner, checksums) are ignored.
_FIELD = re.compile(r"<(Key|VersionId|IsLatest|LastModified|ETag|Size|StorageClass)>([^<]*)<")


def _top(doc: str, tag: str) -> str:
    m = re.search(f"<{tag}>([^<]*)</{tag}>", doc)
    return _unescape(m.group(1)) if m else ""


def _unescape(s: str) -> str:
    return html.unescape(s) if "&" in s else s


def parse_list_versions(body: bytes) -> VersionPage:
    """Parse a ListVersionsResult body, keeping versions and delete markers interleaved.

    Regular expressions, not an XML parser: ~4.5 µs per version instead of ~10
    (xml.etree) or ~76 (botocore). S3's listing is a flat sequence of entries of
    leaf elements: the document is split at each entry's start tag and the
    fields are read from the text up to the next one. tests/test_wire.py checks
    this parser against botocore's on the same pages, awkward keys included.
    """
    doc = body.decode("utf-8")
    url = _top(doc, "EncodingType") == "url"
    unquote = urllib.parse.unquote_plus
    fields = _FIELD.findall
    entries: list[Version] = []
    add = entries.append
    parts = _ENTRY_START.split(doc)  # [head, kind, text, kind, text, …]
    for i in range(1, len(parts), 2):
        f = dict(fields(parts[i + 1]))
        key = f.get("Key", "")
        if url:
            if "%" in key or "+" in key:
                key = unquote(key)
        elif "&" in key:
            key = html.unescape(key)
        vid = f.get("VersionId") or "null"
        latest = f.get("IsLatest") == "true"
        if parts[i] == "Version":
            etag = f.get("ETag", "")
            if "&" in etag:  # usually: the quotes come as &quot; (AWS) or &#34; (SeaweedFS)
                etag = etag.replace("&quot;", "").replace("&#34;", "")
                etag = html.unescape(etag) if "&" in etag else etag
            sc = f.get("StorageClass", "")
            add(
                Version(
                    key,
                    vid,
                    int(f.get("Size") or 0),
                    etag.strip('"'),
                    f.get("LastModified", ""),
                    False,
                    "" if sc == "STANDARD" else sc,
                    latest,
                )
            )
        else:
            add(Version(key, vid, 0, "", f.get("LastModified", ""), True, "", latest))
    truncated = _top(doc, "IsTruncated") == "true"
    nkm = _top(doc, "NextKeyMarker")
    nvm = _top(doc, "NextVersionIdMarker")
    return VersionPage(_history_order(entries), truncated, (unquote(nkm) if url else nkm) or None, nvm or None)


_COMMON_PREFIX = re.compile(r"<CommonPrefixes>\s*<Prefix>([^<]*)</Prefix>", re.S)
_CONTENTS_KEY = re.compile(r"<Contents>.*?<Key>([^<]*)</Key>", re.S)


def parse_list_delimited(body: bytes) -> tuple[list[str], list[str], bool]:
    """A ListBucketResult (ListObjectsV2 with a delimiter): (common prefixes, keys, truncated)."""
    doc = body.decode("utf-8")
    url = _top(doc, "EncodingType") == "url"

    def dec(s: str) -> str:
        return urllib.parse.unquote_plus(s) if url else _unescape(s)

    prefixes = [dec(p) for p in _COMMON_PREFIX.findall(doc)]
    keys = [dec(k) for k in _CONTENTS_KEY.findall(doc)]
    return prefixes, keys, _top(doc, "IsTruncated") == "true"


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


_EMPTY_RESULT = b'<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></ListVersionsResult>'


def _capture_versions_body(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any) -> None:
    """Parse a successful ListObjectVersions body ourselves, and spare botocore the same work.

    botocore's parser costs ~76 µs per version and loses the history order; ours
    keeps it. botocore is handed an empty result (errors are left to it).
    """
    if response_dict.get("status_code") == 200 and response_dict.get("body"):
        customized_response_dict[_ENTRIES] = parse_list_versions(response_dict["body"])
        response_dict["body"] = _EMPTY_RESULT


class _NoResendSession(AIOHTTPSession):  # type: ignore[misc]  # aiobotocore has no type hints
    """aiobotocore's HTTP session, with aiohttp's silent second attempt switched off.

    aiohttp sends a PUT or DELETE again, once, by itself, when a reused
    connection drops before the answer (HTTP calls those methods idempotent).
    S3's CopyObject and DeleteObject are not: a copy sent again after the first
    one landed leaves a second version in the replica. Retries are Pacer's, which
    first looks for the lost write (Pacer.run's `landed`).
    """

    async def _get_session(self, proxy_url: str | None) -> Any:
        session = await super()._get_session(proxy_url)
        if getattr(session, "_retry_connection", False):
            session._retry_connection = False  # no public switch (aiohttp 3.14)
        return session


def _botocore_config(side: Side, pool: int) -> AioConfig:
    s3: dict[str, Any] = {}
    if side.endpoint_url:
        s3["addressing_style"] = "path"  # local and S3-compatible servers rarely do virtual hosts
    return AioConfig(
        http_session_cls=_NoResendSession,
        retries={"total_max_attempts": 1, "mode": "standard"},  # Pacer retries, once, with jitter
        max_pool_connections=pool,
        connect_timeout=10,
        read_timeout=600,  # a large CopyObject answers only when done
        tcp_keepalive=True,
        s3=s3,
    )


_ERROR_FIELD = re.compile(rb"<(Code|Message|RequestId)>([^<]*)</\1>")
_USER_AGENT = f"backfill/{__version__}"
_CREDENTIALS_TTL = 5.0  # seconds between asking botocore whether the credentials need a refresh
START_POLICY = RetryPolicy(attempts=4)  # ≈1.4 s of backoff at most before the first request gives up
SLOWEST_COPY = 10 * 1024 * 1024  # bytes/s that a server-side copy is assumed to manage at least


def _client_error(op: str, r: Response) -> ClientError:
    """An error response as the ClientError botocore would raise, for errors.classify."""
    fields = {k.decode(): v.decode("utf-8", "replace") for k, v in _ERROR_FIELD.findall(r.body)}
    code = fields.get("Code") or str(r.status)
    meta = {"HTTPStatusCode": r.status, "HTTPHeaders": r.headers, "RequestId": fields.get("RequestId", "")}
    return ClientError({"Error": {"Code": code, "Message": fields.get("Message", "")}, "ResponseMetadata": meta}, op)


def list_versions_params(
    prefix: str, key_marker: str | None, version_id_marker: str | None, max_keys: int
) -> list[tuple[str, str]]:
    """ListObjectVersions' query: keys url-encoded in the answer (XML cannot carry every key)."""
    params = [("versions", ""), ("encoding-type", "url"), ("prefix", prefix), ("max-keys", str(max_keys))]
    if key_marker:
        params.append(("key-marker", key_marker))
        if version_id_marker:
            params.append(("version-id-marker", version_id_marker))
    return params


def list_delimited_params(prefix: str, max_keys: int) -> list[tuple[str, str]]:
    """ListObjectsV2's query, one level of "directories" below `prefix`."""
    return [
        ("list-type", "2"),
        ("delimiter", "/"),
        ("encoding-type", "url"),
        ("prefix", prefix),
        ("max-keys", str(max_keys)),
    ]


def copy_headers(source_bucket: str, v: Version, target: dict[str, Any]) -> dict[str, str]:
    """CopyObject's headers for one version: the pinned source, and `target` (Copier._target_params)."""
    headers = {"x-amz-copy-source": copy_source_header(source_bucket, v.key, v.version_id)}
    if v.etag:
        headers["x-amz-copy-source-if-match"] = f'"{v.etag}"'
    for name, value in target.items():
        headers[_HEADER_OF[name]] = str(value)
    return headers


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
        r = await self.pool.request(head, idle_timeout=idle_timeout)  # None: the pool's read timeout
        if r.status >= 300:
            raise _client_error(op, r)
        return r

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
        self.wire: Wire | None = None  # the lean path for the hot calls, when open_bucket set one up
        self.expected_owner: str | None = None  # the account that must own this bucket (every request says so)
        self.expected_source_owner: str | None = None  # the account that must own the bucket copies come from

    def expect_source_owner(self, account: str | None) -> None:
        """Copies into this bucket also name the account that must own their source bucket."""
        self.expected_source_owner = account
        if self.wire is not None:
            self.wire.expected_source_owner = account

    def _owner_params(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        """botocore's before-parameter-build hook: ExpectedBucketOwner (and ExpectedSourceBucketOwner on the
        copy requests) on every request this client sends, where the operation takes them."""
        members = model.input_shape.members if model.input_shape is not None else {}
        if self.expected_owner and "ExpectedBucketOwner" in members:
            params.setdefault("ExpectedBucketOwner", self.expected_owner)
        if self.expected_source_owner and "ExpectedSourceBucketOwner" in members:
            params.setdefault("ExpectedSourceBucketOwner", self.expected_source_owner)

    async def _call(
        self, what: str, op: str, /, pacer: Pacer | None = None, landed: Landed | None = None, **params: Any
    ) -> Any:
        fn = getattr(self.client, op)
        return await (pacer or self.pacer).run(
            what, lambda: fn(**params), bucket=self.name, who=self.who, landed=landed
        )

    def url(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    # --- bucket-level checks ---------------------------------------------------

    async def check_access(self) -> str | None:
        """HeadBucket: the bucket's region, or one clear line for a missing bucket or a denial."""
        # The first request of a run: a throttle or a blip is retried, but an endpoint that
        # cannot be reached is reported within seconds, not after the full retry policy.
        policy = START_POLICY
        what = f"HeadBucket {self.label} s3://{self.name}"
        for attempt in range(policy.attempts):
            try:
                r = await self.client.head_bucket(Bucket=self.name)
                break
            except Exception as exc:
                err = classify(exc, what=what, bucket=self.name, profile_hint=self.who)
                if isinstance(err, RetryableError) and attempt + 1 < policy.attempts:
                    await anyio.sleep(policy.delay(attempt))
                    continue
                hdrs = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPHeaders", {})
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                if code in ("301", "PermanentRedirect", "400") and hdrs.get("x-amz-bucket-region"):
                    return str(hdrs["x-amz-bucket-region"])  # elsewhere: the caller reopens there
                if code in ("404", "NoSuchBucket"):
                    raise UserError(
                        f"{self.label} bucket s3://{self.name} does not exist (or is in another partition): "
                        "check the name"
                    ) from None
                if code in ("403", "AccessDenied"):
                    raise await self._denied() from None
                if isinstance(err, RetryableError):
                    raise UserError(
                        f"cannot use the {self.label} bucket s3://{self.name} ({err}): check the endpoint "
                        "(--endpoint-url, AWS_ENDPOINT_URL), the network, and the region"
                    ) from None
                raise err from exc
        region = r.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
        return str(region) if region else None

    async def _denied(self) -> UserError:
        """Why HeadBucket was refused, as one line: HEAD answers carry no error code, so a
        one-key listing asks for it (an unknown key, a wrong secret, an expired token)."""
        code = ""
        try:
            await self.client.list_objects_v2(Bucket=self.name, MaxKeys=1)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
        except Exception:  # noqa: S110 - only a better message was at stake
            pass
        if code == "InvalidAccessKeyId":
            return UserError(
                f"the access key of {self.who} is not known to the {self.label}'s server (InvalidAccessKeyId): "
                "check the credentials (AWS_ACCESS_KEY_ID, --source-profile/--dest-profile)"
            )
        if code == "SignatureDoesNotMatch":
            return UserError(
                f"the secret key of {self.who} does not match its access key (SignatureDoesNotMatch): "
                "check the credentials (AWS_SECRET_ACCESS_KEY, --source-profile/--dest-profile)"
            )
        if code in ("ExpiredToken", "InvalidToken", "TokenRefreshRequired"):
            return UserError(
                f"the session token of {self.who} is expired or invalid ({code}): renew the credentials "
                "(aws sso login, or a new session)"
            )
        if self.expected_owner:
            option = "--expected-source-owner" if self.label == "source" else "--expected-dest-owner"
            return UserError(
                f"access denied to {self.label} bucket s3://{self.name} with {self.who}: the bucket is not owned by "
                f"account {self.expected_owner} ({option}), or these credentials may not read it: check the bucket "
                f"name and {option}, or grant s3:ListBucket"
            )
        return UserError(
            f"access denied to {self.label} bucket s3://{self.name} with {self.who}: grant "
            "s3:ListBucket (and the copy permissions), or use other credentials"
        )

    async def versioning(self) -> str:
        r = await self._call(f"GetBucketVersioning s3://{self.name}", "get_bucket_versioning", Bucket=self.name)
        return str(r.get("Status", "") or "")

    async def object_lock_enabled(self) -> bool:
        """Whether the bucket has Object Lock; no when it has none, or we may not read it, or the server lacks it."""
        try:
            r = await self._call(
                f"GetObjectLockConfiguration s3://{self.name}", "get_object_lock_configuration", Bucket=self.name
            )
        except (ObjectError, UserError):
            return False
        return bool(r.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")

    # --- listing -------------------------------------------------------------

    async def list_versions(
        self, prefix: str, key_marker: str | None, version_id_marker: str | None, max_keys: int = 1000
    ) -> VersionPage:
        what = f"ListObjectVersions s3://{self.name}/{prefix}"
        wire = self.wire
        if wire is not None:
            return await self.list_pacer.run(
                what,
                lambda: wire.list_versions(prefix, key_marker, version_id_marker, max_keys),
                bucket=self.name,
                who=self.who,
            )
        params: dict[str, Any] = {"Bucket": self.name, "Prefix": prefix, "MaxKeys": max_keys}
        if key_marker:
            params["KeyMarker"] = key_marker
            if version_id_marker:
                params["VersionIdMarker"] = version_id_marker
        r = await self._call(what, "list_object_versions", pacer=self.list_pacer, **params)
        page: VersionPage = r[_ENTRIES]
        return page

    async def list_delimited(self, prefix: str, max_keys: int = 1000) -> tuple[list[str], list[str], bool]:
        """One page of ListObjectsV2 with Delimiter='/': (common prefixes, keys, truncated)."""
        wire = self.wire
        if wire is not None:
            return await self.list_pacer.run(
                f"ListObjectsV2 s3://{self.name}/{prefix}",
                lambda: wire.list_delimited(prefix, max_keys),
                bucket=self.name,
                who=self.who,
            )
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

    async def delete_marker(self, dst_key: str, landed: Callable[[], Awaitable[str | None]] | None = None) -> str:
        """Recreate a delete marker; its replica version ID. `landed`: see Pacer.run."""
        what = f"DeleteObject (delete marker) {self.dest.url(dst_key)}"
        wire = self.dest.wire
        if wire is not None:
            return await self.dest.pacer.run(
                what, lambda: wire.delete_object(dst_key), bucket=self.dest.name, who=self.dest.who, landed=landed
            )
        r = await self.dest._call(
            what, "delete_object", landed=_as_response(landed), Bucket=self.dest.name, Key=dst_key
        )
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
        if wire is not None and not self.carry_lock:
            headers = copy_headers(self.source.name, v, self._target_params(v))
            return await self.dest.pacer.run(
                what,
                lambda: wire.copy_object(dst_key, headers, v.size),
                bucket=self.dest.name,
                who=self.dest.who,
                landed=landed,
            )
        params = {
            "Bucket": self.dest.name,
            "Key": dst_key,
            "CopySource": self._copy_source(v),
            **self._target_params(v),
            **(await self._lock_params(v)),
        }
        if v.etag:
            params["CopySourceIfMatch"] = f'"{v.etag}"'
        r = await self.dest._call(what, "copy_object", landed=_as_response(landed), **params)
        return str(r.get("VersionId", "") or "")

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
        token = await self.journal.upload_begun(dst_key) if self.journal else ""
        try:
            up = await self.dest._call(f"CreateMultipartUpload for {what}", "create_multipart_upload", **create)
        except (ObjectError, UserError):
            if self.journal:  # refused: no upload exists (after a timeout or a 5xx one might: kept)
                await self.journal.upload_ended(token)
            raise
        upload_id = up["UploadId"]
        etags: list[str] = [""] * len(sizes)
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
                landed=_as_response(landed),
                Bucket=self.dest.name,
                Key=dst_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"ETag": e, "PartNumber": i + 1} for i, e in enumerate(etags)]},
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
                await self.dest._call(
                    f"AbortMultipartUpload {self.dest.url(dst_key)}", "abort_multipart_upload", **params
                )
            else:
                await self.dest.client.abort_multipart_upload(**params)
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
            r = await self.dest._call(
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


Landed = Callable[[], Awaitable[Any]]


def _as_response(landed: Callable[[], Awaitable[str | None]] | None) -> Landed | None:
    """A `landed` check that answers with a replica version ID, shaped as botocore's response."""
    if landed is None:
        return None
    check = landed

    async def as_response() -> dict[str, str] | None:
        vid = await check()
        return None if vid is None else {"VersionId": vid}

    return as_response


def copy_source_header(bucket: str, key: str, version_id: str) -> str:
    """x-amz-copy-source, encoded as botocore encodes a CopySource dict."""
    return f"{urllib.parse.quote(f'{bucket}/{key}', safe='-._~/')}?versionId={version_id}"


def who(profile: str | None) -> str:
    return f"profile {profile}" if profile else "the default credentials"


def _session(profile: str | None) -> aioboto3.Session:
    try:
        return aioboto3.Session(profile_name=profile)
    except Exception as exc:
        raise classify(exc, what="profile") from exc


class Sessions:
    """A run's aioboto3 sessions, one per profile.

    Each session parses botocore's endpoint data and S3 model on its first
    client (≈0.1 s of CPU); the source and the replica reached with the same
    profile share one.
    """

    def __init__(self) -> None:
        self._by_profile: dict[str | None, aioboto3.Session] = {}

    def get(self, profile: str | None) -> aioboto3.Session:
        if profile not in self._by_profile:
            self._by_profile[profile] = _session(profile)
        return self._by_profile[profile]


LIST_POOL = 32  # connections for listing: shards listed at once are bounded by it


def reserve_open_files(copy_pool: int) -> None:
    """Raise the soft limit on open files to what the pools need, or say how to make room.

    Every connection is a file descriptor; macOS starts a shell with 256 of them,
    fewer than a default run's connections.
    """
    try:
        import resource
    except ImportError:  # not a POSIX system: nothing to raise
        return
    needed = copy_pool + LIST_POOL + 64  # the manifest, the state files, Python's own
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard == resource.RLIM_INFINITY or hard >= needed:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
            return
    raise UserError(
        f"this run needs about {needed} open files (one per connection) and this process may open "
        f"{soft}: lower --concurrency, or raise the limit (`ulimit -n {needed}`)"
    )


@contextlib.asynccontextmanager
async def open_bucket(
    side: Side,
    label: str,
    pacer: Pacer,
    pool: int,
    list_pacer: Pacer | None = None,
    sessions: Sessions | None = None,
) -> AsyncIterator[Bucket]:
    """A Bucket for one side, checked with HeadBucket, in the bucket's own region.

    Without --*-region the client starts in the profile's region (or us-east-1)
    and moves once if HeadBucket says the bucket lives elsewhere.
    """
    session = (sessions or Sessions()).get(side.profile)
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
            bucket.expected_owner = side.expected_owner
            client.meta.events.register("before-parameter-build.s3", bucket._owner_params)
            actual = await bucket.check_access()
            if actual and actual != region and not side.region:
                region = actual
                continue  # reopen in the bucket's region (closed by the finally below)
            if actual and actual != region:
                raise UserError(
                    f"{label} bucket s3://{side.url.bucket} is in {actual}, not {region}: "
                    f"fix --{'source' if label == 'source' else 'dest'}-region or leave it out"
                )
            if side.lean:
                bucket.wire = await _open_wire(session, client, bucket.name, pool, side.read_timeout)
                if bucket.wire is not None:
                    bucket.wire.expected_owner = side.expected_owner
            try:
                yield bucket
            finally:
                if bucket.wire is not None:
                    bucket.wire.pool.close()
            return
        finally:
            with anyio.CancelScope(shield=True):
                await ctx.__aexit__(None, None, None)
    raise UserError(f"cannot settle the region of {label} bucket s3://{side.url.bucket}")


async def _open_wire(
    session: aioboto3.Session, client: Any, bucket: str, pool: int, read_timeout: float
) -> Wire | None:
    """The lean path to `bucket`, reaching it exactly where botocore would, or None to stay on botocore.

    botocore resolves the endpoint (virtual host or path style, FIPS, dual-stack,
    custom endpoints) and the credentials; a presigned URL shows where it sends a
    request for this bucket. A proxy in the environment keeps everything on botocore.
    """
    url = urllib.parse.urlsplit(await client.generate_presigned_url("head_bucket", Params={"Bucket": bucket}))
    if url.scheme not in ("http", "https") or not url.hostname:
        return None
    proxies = urllib.request.getproxies()
    if url.scheme in proxies and not urllib.request.proxy_bypass(url.hostname):
        return None
    credentials = await session.get_credentials()
    if credentials is None:
        return None
    context = None
    default_port = 443 if url.scheme == "https" else 80
    if url.scheme == "https":
        ca_bundle = os.environ.get("AWS_CA_BUNDLE") or session._session.get_config_variable("ca_bundle")
        context = ssl.create_default_context(cafile=ca_bundle or get_cert_path(True))
    port = url.port or default_port
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    if port != default_port:
        host = f"{host}:{port}"
    return Wire(
        Pool(url.hostname, port, context, read_timeout=read_timeout, max_idle=pool),
        Signer(client.meta.region_name),
        credentials,
        host,
        url.path.rstrip("/"),
    )
