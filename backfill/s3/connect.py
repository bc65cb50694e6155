"""Sessions, the one client factory, and opening a bucket.

Clients come from aioboto3 sessions (AWS CLI conventions: profiles, regions,
AWS_ENDPOINT_URL, AWS_CA_BUNDLE). Every client of the product is built by
`open_client` here. An S3 client, whoever uses it (the buckets of a run, the
state location of a multi-shard job, `backfill setup`), has one retry policy:
botocore's retries are off and so is aiohttp's silent resend, and its requests
are retried by pacing.Pacer, which looks for a write whose answer was lost
before it sends it again. IAM, STS, SNS and EventBridge clients (setup only)
keep the SDK's standard retries: their few calls are idempotent reads and
puts, and setup maps botocore's own exceptions.

An S3 client addresses buckets path-style when an endpoint is configured
(local and S3-compatible servers rarely do virtual hosts).
"""

from __future__ import annotations

import contextlib
import os
import ssl
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aioboto3
import anyio
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from botocore.httpsession import get_cert_path

from backfill.config import Side
from backfill.errors import UserError, classify
from backfill.pacing import Pacer
from backfill.s3.bucket import Bucket
from backfill.s3.http1 import Pool
from backfill.s3.listing import capture_versions_body
from backfill.s3.sigv4 import Signer
from backfill.s3.wire import Wire


class _NoResendSession(AIOHTTPSession):  # type: ignore[misc]  # aiobotocore has no type hints
    """aiobotocore's HTTP session, with aiohttp's silent second attempt switched off.

    aiohttp sends a PUT or DELETE again, once, by itself, when a reused
    connection drops before the answer (HTTP calls those methods idempotent).
    S3's CopyObject and DeleteObject are not: a copy sent again after the first
    one landed leaves a second version in the replica, and a conditional write
    sent again is refused because of our own first one. Retries are Pacer's,
    which first looks for the lost write (Pacer.run's `landed`).
    """

    async def _get_session(self, proxy_url: str | None) -> Any:
        session = await super()._get_session(proxy_url)
        if getattr(session, "_retry_connection", False):
            session._retry_connection = False  # no public switch (aiohttp 3.14)
        return session


def _botocore_config(
    service: str, *, path_style: bool, pool: int, connect_timeout: float, read_timeout: float
) -> AioConfig:
    if service != "s3":  # setup's IAM/STS/SNS/EventBridge calls: the SDK's standard retries
        return AioConfig(
            retries={"mode": "standard", "max_attempts": 5},
            max_pool_connections=pool,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
    return AioConfig(
        http_session_cls=_NoResendSession,
        retries={"total_max_attempts": 1, "mode": "standard"},  # Pacer retries, once, with jitter
        max_pool_connections=pool,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        tcp_keepalive=True,
        s3={"addressing_style": "path"} if path_style else {},
    )


def open_client(
    session: aioboto3.Session,
    service: str = "s3",
    *,
    region: str | None,
    endpoint_url: str | None = None,
    pool: int = 10,
    connect_timeout: float = 10,
    read_timeout: float = 60,
) -> Any:
    """The one client factory: a client of `service` to enter with `async with`.

    `region` None: the profile's. `endpoint_url` None: botocore's own resolution
    (AWS_ENDPOINT_URL_<SERVICE>, AWS_ENDPOINT_URL, the config file); given, S3 is
    addressed path-style. Certificates: botocore's (AWS_CA_BUNDLE, ca_bundle),
    which the lean path also uses (ca_file). An S3 client never retries by
    itself: run its requests through a Pacer.
    """
    config = _botocore_config(
        service,
        path_style=bool(endpoint_url),
        pool=pool,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    return session.client(service, region_name=region, endpoint_url=endpoint_url, config=config)


def endpoint_from_env() -> str | None:
    """The S3 endpoint the environment names (AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL), as the AWS CLI reads it."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def ca_file(session: aioboto3.Session) -> str:
    """The certificates botocore verifies HTTPS with: AWS_CA_BUNDLE, the profile's ca_bundle, or its own."""
    configured = os.environ.get("AWS_CA_BUNDLE") or session._session.get_config_variable("ca_bundle")
    return str(configured or get_cert_path(True))


def who(profile: str | None) -> str:
    return f"profile {profile}" if profile else "the default credentials"


def new_session(profile: str | None) -> aioboto3.Session:
    """An aioboto3 session of a named profile (None: the default credentials chain); UserError for a bad profile."""
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
            self._by_profile[profile] = new_session(profile)
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
            ctx = open_client(
                session, region=region, endpoint_url=side.endpoint_url, pool=pool, read_timeout=600
            )  # read_timeout: a large CopyObject answers only when done
            client = await ctx.__aenter__()
        except Exception as exc:
            raise classify(exc, what=f"{label} client") from exc
        try:
            client.meta.events.register("before-parse.s3.ListObjectVersions", capture_versions_body)
            bucket = Bucket(client, side.url.bucket, label, who(side.profile), pacer, list_pacer)
            bucket.expected_owner = side.expected_owner
            client.meta.events.register("before-parameter-build.s3", bucket.owner_params)
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
        context = ssl.create_default_context(cafile=ca_file(session))
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
