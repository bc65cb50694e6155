"""One bucket seen through one principal's client: access checks, bucket settings, listings, reads.

Every request goes through the bucket's Pacer (retries, throttling, the rate
cap); botocore's own retries are off (sdk.py). Listings and the preflight's requests
(HeadBucket, versioning, Object Lock, replication, the KMS preflight's HEADs) take
the lean path (wire.py) when open_bucket set one up; the botocore client is opened
on the first request that needs it (`botocore()`).
"""

from __future__ import annotations

import contextlib
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from botocore.exceptions import ClientError

from backfill.errors import (
    EXPIRED_CODES,
    SKEW_CODES,
    ObjectError,
    RetryableError,
    UserError,
    classify,
    clock_skew,
    credentials_expired,
)
from backfill.models import Version
from backfill.pacing import Pacer, RetryPolicy
from backfill.s3.listing import ENTRIES, VersionPage, parse_replication
from backfill.s3.sse_c import SSE_C, CustomerKey
from backfill.s3.wire import Wire

PREFETCH_FRESH = 60.0  # seconds a page listed by the preflight may stand for a listing asked for later
# Entries in the preflight's first version page: small, because the first copies wait for it (discovery
# starts from it). A server answers 100 entries in a fraction of the time of 1,000 (SeaweedFS: about a
# sixth, benchmarks/RESULTS.md "the preflight's first page at 100 entries"); the lister asks on from its markers.
PREFETCH_ENTRIES = 100
START_POLICY = RetryPolicy(attempts=4)  # ≈1.4 s of backoff at most before the first request gives up

Landed = Callable[[], Awaitable[Any]]  # Pacer.run's `landed`, answering as botocore would

_STATUS = re.compile(rb"<Status>([^<]*)</Status>")
_LOCK_ENABLED = re.compile(rb"<ObjectLockEnabled>\s*Enabled\s*</ObjectLockEnabled>")


class Bucket:
    """One bucket seen through one principal's client, with the pacer for its requests."""

    def __init__(
        self, client: Any, name: str, label: str, who: str, pacer: Pacer, list_pacer: Pacer | None = None
    ) -> None:
        self.client = client  # botocore's, once opened (botocore())
        self.endpoint = ""  # the endpoint URL the side was given (--endpoint-url, AWS_ENDPOINT_URL); "": AWS's
        self.opener: Callable[[], Awaitable[Any]] | None = None  # opens it (connect.open_bucket sets it)
        self._opening = anyio.Lock()
        self.region = ""  # the region requests are signed for
        self._replication: tuple[dict[str, Any] | None, BaseException | None] | None = None
        self._prefetched: dict[tuple[str, str], tuple[float, Any, int]] = {}  # the preflight's pages, uses left
        self.name = name
        self.label = label  # "source" / "replica", for messages
        self.who = who  # "profile X" or "the default credentials", for messages
        self.pacer = pacer  # object requests
        self.list_pacer = list_pacer or pacer  # listings
        self.wire: Wire | None = None  # the lean path for the hot calls, when open_bucket set one up
        self.expected_owner: str | None = None  # the account that must own this bucket (every request says so)
        self.expected_source_owner: str | None = None  # the account that must own the bucket copies come from
        self.list_calls = 0  # ListObjectVersions and ListObjectsV2 pages asked for (the estimate counts them)
        self.request_payer = False  # every request says the requester pays (--request-payer requester)
        self.customer_key: CustomerKey | None = None  # SSE-C: this side's key (--source/--dest-sse-c-key)

    def expect_source_owner(self, account: str | None) -> None:
        """Copies into this bucket also name the account that must own their source bucket."""
        self.expected_source_owner = account
        if self.wire is not None:
            self.wire.expected_source_owner = account

    def owner_params(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        """botocore's before-parameter-build hook: ExpectedBucketOwner (and ExpectedSourceBucketOwner on the
        copy requests) on every request this client sends, where the operation takes them."""
        members = model.input_shape.members if model.input_shape is not None else {}
        if self.expected_owner and "ExpectedBucketOwner" in members:
            params.setdefault("ExpectedBucketOwner", self.expected_owner)
        if self.expected_source_owner and "ExpectedSourceBucketOwner" in members:
            params.setdefault("ExpectedSourceBucketOwner", self.expected_source_owner)

    async def botocore(self) -> Any:
        """The bucket's botocore client, opened on first use (aioboto3 is imported then, not at start-up)."""
        if self.client is None:
            async with self._opening:
                if self.client is None:
                    if self.opener is None:
                        raise RuntimeError(f"no botocore client for s3://{self.name}")
                    self.client = await self.opener()
        return self.client

    async def call(
        self, what: str, op: str, /, pacer: Pacer | None = None, landed: Landed | None = None, **params: Any
    ) -> Any:
        """One botocore request `op` through the bucket's pacer (or `pacer`); `landed`: see Pacer.run."""
        fn = getattr(await self.botocore(), op)
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
        wire = self.wire
        for attempt in range(policy.attempts):
            try:
                if wire is not None:
                    region = (await wire.head_bucket()).headers.get("x-amz-bucket-region")
                else:
                    r = await (await self.botocore()).head_bucket(Bucket=self.name)
                    region = r.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
                break
            except Exception as exc:
                err = classify(exc, what=what, bucket=self.name, profile_hint=self.who)
                if isinstance(err, RetryableError) and attempt + 1 < policy.attempts:
                    await anyio.sleep(policy.delay(attempt))
                    continue
                response = getattr(exc, "response", None) or {}  # None on botocore's SSLError and friends
                hdrs = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
                code = response.get("Error", {}).get("Code", "")
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
        return str(region) if region else None

    async def _denied(self) -> UserError:
        """Why HeadBucket was refused, as one line: HEAD answers carry no error code, so a
        one-key listing asks for it (an unknown key, a wrong secret, an expired token)."""
        code = ""
        response: dict[str, Any] = {}
        try:
            if self.wire is not None:
                await self.wire.list_one()
            else:
                await (await self.botocore()).list_objects_v2(Bucket=self.name, MaxKeys=1)
        except ClientError as exc:
            response = exc.response
            code = str(exc.response.get("Error", {}).get("Code", ""))
        except Exception:  # noqa: S110 - only a better message was at stake
            pass
        if code in SKEW_CODES:
            return clock_skew(response.get("Error", {}), response.get("ResponseMetadata", {}).get("HTTPHeaders", {}))
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
        if code in EXPIRED_CODES:
            return credentials_expired(self.who, code)
        payer = "" if self.request_payer else ", or, for a Requester Pays bucket, pass --request-payer requester"
        if self.expected_owner:
            option = "--expected-source-owner" if self.label == "source" else "--expected-dest-owner"
            return UserError(
                f"access denied to {self.label} bucket s3://{self.name} with {self.who}: the bucket is not owned by "
                f"account {self.expected_owner} ({option}), or these credentials may not read it: check the bucket "
                f"name and {option}, or grant s3:ListBucket{payer}"
            )
        return UserError(
            f"access denied to {self.label} bucket s3://{self.name} with {self.who}: grant "
            f"s3:ListBucket (and the copy permissions), or use other credentials{payer}"
        )

    async def _setting(self, what: str, op: str, name: str) -> bytes:
        """A bucket setting's XML on the lean path (`wire` is set), through the pacer."""
        wire = self.wire
        assert wire is not None
        return await self.pacer.run(what, lambda: wire.bucket_setting(op, name), bucket=self.name, who=self.who)

    async def versioning(self) -> str:
        what = f"GetBucketVersioning s3://{self.name}"
        if self.wire is not None:
            m = _STATUS.search(await self._setting(what, "GetBucketVersioning", "versioning"))
            return m.group(1).decode().strip() if m else ""
        r = await self.call(what, "get_bucket_versioning", Bucket=self.name)
        return str(r.get("Status", "") or "")

    async def object_lock_enabled(self) -> bool:
        """Whether the bucket has Object Lock; no when it has none, or we may not read it, or the server lacks it."""
        what = f"GetObjectLockConfiguration s3://{self.name}"
        try:
            if self.wire is not None:
                body = await self._setting(what, "GetObjectLockConfiguration", "object-lock")
                return bool(_LOCK_ENABLED.search(body))
            r = await self.call(what, "get_object_lock_configuration", Bucket=self.name)
        except (ObjectError, UserError):
            return False
        return bool(r.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")

    # --- listing -------------------------------------------------------------

    def drop_prefetched(self) -> None:
        """Forget the preflight's pages: every listing from now on asks S3 (with the page size it asks for)."""
        self._prefetched.clear()

    def _take_prefetched(self, kind: str, prefix: str) -> Any:
        """A first page the preflight listed (as many times as it was kept for, within PREFETCH_FRESH seconds)."""
        at, page, uses = self._prefetched.get((kind, prefix), (0.0, None, 0))
        if not uses:
            return None
        self._prefetched[(kind, prefix)] = (at, page, uses - 1)  # kept while fresh for "within" (list_versions)
        return page if time.monotonic() - at <= PREFETCH_FRESH else None

    def _prefetched_within(self, prefix: str, after: str | None) -> VersionPage | None:
        """The preflight's first version page of `prefix`, when it holds entries of keys after `after`: it
        answers a listing that starts after that key as well (a shard's first listing: the lister passes
        over the entries at or before its marker). Kept for any number of such listings while fresh."""
        at, page, _uses = self._prefetched.get(("versions", prefix), (0.0, None, 0))
        if page is None or time.monotonic() - at > PREFETCH_FRESH:
            return None
        held: VersionPage = page
        if after is not None and held.truncated and not (held.entries and after < held.entries[-1].key):
            return None  # the page ends at or before `after`: the listing must go on from the server
        return held

    async def prefetch_versions(self, prefix: str) -> VersionPage:
        """The first version page of `prefix` (PREFETCH_ENTRIES), listed now and kept: it answers shard discovery's
        first request once and, while fresh, the first listing of every shard that starts inside it
        (list_versions, reuse="within"). The preflight lists it while its checks run."""
        page = await self.list_versions(prefix, None, None, PREFETCH_ENTRIES)
        self._prefetched[("versions", prefix)] = (time.monotonic(), page, 1)
        return page

    async def prefetch_delimited(self, prefix: str) -> None:
        """The first delimited page of `prefix` (shard discovery's second request), listed now and kept."""
        page = await self.list_delimited(prefix, 1000)
        self._prefetched[("delimited", prefix)] = (time.monotonic(), page, 1)

    async def list_versions(
        self,
        prefix: str,
        key_marker: str | None,
        version_id_marker: str | None,
        max_keys: int = 1000,
        *,
        reuse: str = "start",
    ) -> VersionPage:
        """One ListObjectVersions page. `reuse` says when the preflight's first page of `prefix` may answer
        instead of S3 (bucket.prefetch_versions): "start", a listing from the start of the prefix (as many
        times as the page was kept for); "within", also a listing that starts after a key the page holds
        (a shard's first listing); "never", a listing that must show the bucket as it is now."""
        if self._prefetched and reuse != "never" and max_keys <= 1000:
            prefetched: VersionPage | None = None
            if reuse == "within" and version_id_marker is None:
                prefetched = self._prefetched_within(prefix, key_marker)
            elif key_marker is None:
                prefetched = self._take_prefetched("versions", prefix)
            if prefetched is not None:
                return prefetched
        self.list_calls += 1
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
        r = await self.call(what, "list_object_versions", pacer=self.list_pacer, **params)
        page: VersionPage = r[ENTRIES]
        return page

    async def list_delimited(self, prefix: str, max_keys: int = 1000) -> tuple[list[str], list[str], bool]:
        """One page of ListObjectsV2 with Delimiter='/': (common prefixes, keys, truncated)."""
        if max_keys == 1000 and self._prefetched:
            prefetched: tuple[list[str], list[str], bool] | None = self._take_prefetched("delimited", prefix)
            if prefetched is not None:
                return prefetched
        self.list_calls += 1
        wire = self.wire
        if wire is not None:
            return await self.list_pacer.run(
                f"ListObjectsV2 s3://{self.name}/{prefix}",
                lambda: wire.list_delimited(prefix, max_keys),
                bucket=self.name,
                who=self.who,
            )
        r = await self.call(
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
        what = f"HeadObject {self.url(key)}"
        try:
            r: dict[str, Any] = await self.call(what, "head_object", **params)
        except ObjectError as exc:
            if exc.code not in ("400", "BadRequest"):
                raise
            # S3 answers 400 to a HEAD of an SSE-C object without its key: with the key if we have it.
            if self.customer_key is None:
                option = "--source-sse-c-key" if self.label == "source" else "--dest-sse-c-key"
                raise ObjectError(f"{what}: 400, SSE-C encrypted? pass {option} FILE", code=SSE_C) from None
            r = await self.call(what, "head_object", **params, **self.customer_key.params())
        return r

    async def encryption(self, key: str, version_id: str) -> tuple[str, str]:
        """One version's server-side encryption and KMS key ID ("" when none), by HEAD (the KMS preflight's)."""
        wire = self.wire
        if wire is None:
            h = await self.head(key, version_id)
            return str(h.get("ServerSideEncryption") or ""), str(h.get("SSEKMSKeyId") or "")
        r = await self.pacer.run(
            f"HeadObject {self.url(key)}", lambda: wire.head_object(key, version_id), bucket=self.name, who=self.who
        )
        return r.get("x-amz-server-side-encryption", ""), r.get("x-amz-server-side-encryption-aws-kms-key-id", "")

    async def get_body(self, key: str, version_id: str) -> Any:
        """The streaming body of one version (the caller reads and closes it)."""
        what = f"GetObject {self.url(key)}"
        params: dict[str, Any] = {"Bucket": self.name, "Key": key, "VersionId": version_id}
        try:
            r = await self.call(what, "get_object", **params)
        except ObjectError as exc:
            if self.customer_key is None or exc.code not in ("InvalidArgument", "InvalidRequest", "400"):
                raise
            r = await self.call(what, "get_object", **params, **self.customer_key.params())  # SSE-C: with the key
        return r["Body"]

    async def tagging(self, key: str, version_id: str) -> str:
        r = await self.call(
            f"GetObjectTagging {self.url(key)}", "get_object_tagging", Bucket=self.name, Key=key, VersionId=version_id
        )
        return urllib.parse.urlencode([(t["Key"], t["Value"]) for t in r.get("TagSet", [])])

    # --- live replication (pipeline/replication.py) -------------------------

    async def replication(self) -> dict[str, Any] | None:
        """GetBucketReplication: the bucket's replication configuration, None when it has none.

        AccessDenied propagates (the caller decides); a server without replication answers None.
        Asked once per bucket: the answer (or the error) is kept, so that the preflight can ask
        it while other checks run and the detection read it later.
        """
        if self._replication is None:
            try:
                self._replication = (await self._ask_replication(), None)
            except Exception as exc:
                self._replication = (None, exc)
        config, error = self._replication
        if error is not None:
            raise error
        return config

    async def _ask_replication(self) -> dict[str, Any] | None:
        what = f"GetBucketReplication s3://{self.name}"
        try:
            if self.wire is not None:
                body = await self._setting(what, "GetBucketReplication", "replication")
                with contextlib.suppress(SyntaxError):  # xml's ParseError: botocore's turn, it says what is wrong
                    rules = parse_replication(body)
                    return rules if rules["Rules"] else None
            r = await self.call(what, "get_bucket_replication", Bucket=self.name)
        except ObjectError as exc:
            if exc.code in ("ReplicationConfigurationNotFoundError", "NotImplemented", "404", "MethodNotAllowed"):
                return None
            raise
        config: dict[str, Any] = r.get("ReplicationConfiguration") or {}
        return config or None

    async def head_current(self, key: str) -> tuple[Version | None, str | None]:
        """HEAD of the key's current version: (that version, its x-amz-replication-status).

        (None, None) when the current version is a delete marker (S3 answers 404 with
        x-amz-delete-marker) or the key has gone.
        """
        try:
            r = await self.call(f"HeadObject {self.url(key)}", "head_object", Bucket=self.name, Key=key)
        except ObjectError as exc:
            if exc.code in ("404", "NoSuchKey", "405", "MethodNotAllowed"):
                return None, None
            raise
        modified = r.get("LastModified")
        v = Version(
            key,
            str(r.get("VersionId") or "null"),
            int(r.get("ContentLength", 0)),
            str(r.get("ETag", "")).strip('"'),
            modified.isoformat() if modified is not None else "",
            storage_class=str(r.get("StorageClass", "") or ""),
        )
        status = r.get("ReplicationStatus")
        return v, str(status) if status else None

    async def replication_status(self, key: str, version_id: str) -> str | None:
        """x-amz-replication-status of one version (None: none, or the version has gone)."""
        try:
            r = await self.head(key, version_id)
        except ObjectError as exc:
            if exc.code in ("404", "NoSuchKey", "NoSuchVersion", "405", "MethodNotAllowed"):
                return None
            raise
        status = r.get("ReplicationStatus")
        return str(status) if status else None
