"""How a run reaches each bucket: credentials, region and endpoint resolved once per side; open_bucket.

Two ways to resolve a side, both giving a Bucket whose hot calls (and its preflight:
HeadBucket, versioning, Object Lock, replication, the KMS preflight's HEADs) take the
lean path (wire.py), and whose botocore client, for everything else, is opened on its
first use (Bucket.botocore) with the same credentials, region and endpoint:

- the lean resolution (`lean_reach`), with no SDK imported: an explicit endpoint
  (--endpoint-url, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL), static keys in the
  environment and no profile (what botocore's chain would pick first: its
  EnvProvider), no config file that could say otherwise, no proxy, nothing
  (FIPS, dual-stack) that changes where botocore would send a request;
- otherwise botocore's (sdk.py): profiles, SSO, assume-role, credential_process,
  AWS's own endpoints; its session's one credentials object is shared by the lean
  path and the client.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from backfill.config import Side
from backfill.errors import UserError, classify
from backfill.pacing import Pacer
from backfill.s3.bucket import Bucket
from backfill.s3.http1 import Pool, ca_context
from backfill.s3.listing import capture_versions_body
from backfill.s3.sigv4 import Signer
from backfill.s3.sse_c import read_key
from backfill.s3.wire import Wire

if TYPE_CHECKING:
    import ssl

    import aioboto3


def open_client(session: aioboto3.Session, service: str = "s3", **kwargs: Any) -> Any:
    """The one client factory (sdk.open_client): a client of `service` to enter with `async with`."""
    from backfill.s3 import sdk  # the SDK's imports (≈0.3 s of CPU) only where a client is made

    return sdk.open_client(session, service, **kwargs)


def new_session(profile: str | None) -> aioboto3.Session:
    """An aioboto3 session of a named profile (None: the default credentials chain); UserError for a bad profile."""
    from backfill.s3 import sdk  # see open_client

    return sdk.new_session(profile)


def ca_file(session: aioboto3.Session) -> str:
    """The certificates botocore verifies HTTPS with: AWS_CA_BUNDLE, the profile's ca_bundle, or its own."""
    from backfill.s3 import sdk  # see open_client

    return sdk.ca_file(session)


def endpoint_from_env() -> str | None:
    """The S3 endpoint the environment names (AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL), as the AWS CLI reads it."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def who(profile: str | None) -> str:
    return f"profile {profile}" if profile else "the default credentials"


class Sessions:
    """A run's aioboto3 sessions, one per profile, made on first use.

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


@dataclass(frozen=True, slots=True)
class Keys:
    """Static credentials, shaped as botocore's frozen ones; their own credentials provider for the Wire."""

    access_key: str
    secret_key: str
    token: str | None = None

    async def get_frozen_credentials(self) -> Keys:
        return self


# Settings that change where or how botocore sends a request even to an explicit endpoint: with any of
# them set, botocore resolves the side.
_BOTOCORE_SETTINGS = (
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_CREDENTIAL_EXPIRATION",  # EnvProvider's refreshable credentials
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
)


@dataclass(frozen=True, slots=True)
class Reach:
    """Where a side's requests go and with what, resolved without botocore (`lean_reach`)."""

    keys: Keys
    region: str
    scheme: str
    hostname: str
    port: int
    host: str  # the Host header
    path: str  # the endpoint's own path, without a trailing slash
    ca: str | None  # https: the CA bundle (AWS_CA_BUNDLE, else botocore's)


def _config_file_is_empty() -> bool:
    path = os.path.expanduser(os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config")
    try:
        return not os.path.isfile(path) or os.path.getsize(path) == 0
    except OSError:
        return False


def _default_ca() -> str:
    """botocore's default CA bundle (botocore.httpsession.get_cert_path(True)), without importing it."""
    try:
        import certifi  # what botocore uses when it is installed

        return str(certifi.where())
    except ImportError:
        import importlib.util

        spec = importlib.util.find_spec("botocore")
        assert spec is not None and spec.origin is not None
        return os.path.join(os.path.dirname(spec.origin), "cacert.pem")


def lean_reach(side: Side) -> Reach | None:
    """The side resolved as botocore would, without botocore, when that is certain; None: ask botocore."""
    env = os.environ
    if not side.lean or side.profile or not side.endpoint_url or ":" in side.url.bucket:
        return None
    if any(env.get(name) for name in _BOTOCORE_SETTINGS):
        return None
    access, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not access or not secret or not _config_file_is_empty():
        return None
    url = urllib.parse.urlsplit(side.endpoint_url)
    if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
        return None
    from urllib.request import getproxies, proxy_bypass  # ≈10 ms of imports, only for a side reached this way

    if url.scheme in getproxies() and not proxy_bypass(url.hostname):
        return None  # botocore goes through the proxy
    token = env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN") or None
    default_port = 443 if url.scheme == "https" else 80
    port = url.port or default_port
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    if port != default_port:
        host = f"{host}:{port}"
    ca = (env.get("AWS_CA_BUNDLE") or _default_ca()) if url.scheme == "https" else None
    region = side.region or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    path = url.path.rstrip("/")
    return Reach(Keys(access, secret, token), region, url.scheme, url.hostname, port, host, path, ca)


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


def _configure(bucket: Bucket, side: Side, label: str) -> None:
    bucket.expected_owner = side.expected_owner
    bucket.request_payer = side.request_payer
    if side.sse_c_key:
        bucket.customer_key = read_key(side.sse_c_key, f"--{'source' if label == 'source' else 'dest'}-sse-c-key")


def _hooks(client: Any, bucket: Bucket) -> None:
    """The botocore client's hooks: the raw version listing, owners, Object Lock's Content-MD5, Requester Pays."""
    client.meta.events.register("before-parse.s3.ListObjectVersions", capture_versions_body)
    client.meta.events.register("before-parameter-build.s3", bucket.owner_params)
    client.meta.events.register("before-sign.s3.CopyObject", lock_content_md5)
    if bucket.request_payer:
        client.meta.events.register("before-sign.s3", request_payer_header)


def _wrong_region(side: Side, label: str, actual: str, region: str) -> UserError:
    return UserError(
        f"{label} bucket s3://{side.url.bucket} is in {actual}, not {region}: "
        f"fix --{'source' if label == 'source' else 'dest'}-region or leave it out"
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
    and moves once if HeadBucket says the bucket lives elsewhere. The bucket's
    botocore client is opened on its first use (Bucket.botocore) and closed here.
    """
    sessions = sessions or Sessions()
    reach = lean_reach(side)
    async with contextlib.AsyncExitStack() as stack:
        bucket = Bucket(None, side.url.bucket, label, who(side.profile), pacer, list_pacer)
        bucket.endpoint = side.endpoint_url or ""
        _configure(bucket, side, label)

        def close_wire() -> None:
            if bucket.wire is not None:
                bucket.wire.pool.close()

        stack.callback(close_wire)
        if reach is None:
            await _open_with_botocore(bucket, side, pool, sessions, stack)
        else:
            await _open_lean(bucket, side, reach, pool, sessions, stack)
        yield bucket


def _client_opener(
    bucket: Bucket,
    sessions: Sessions,
    side: Side,
    region: str,
    pool: int,
    stack: contextlib.AsyncExitStack,
    keys: Keys | None = None,
) -> Callable[[], Any]:
    """Bucket.opener: the bucket's botocore client, entered into `stack` (closed when the bucket is)."""

    async def opener() -> Any:
        session = sessions.get(side.profile)
        try:
            ctx = open_client(
                session, region=region, endpoint_url=side.endpoint_url, pool=pool, read_timeout=600, keys=keys
            )  # read_timeout: a large CopyObject answers only when done
            client = await ctx.__aenter__()
        except Exception as exc:
            raise classify(exc, what=f"{bucket.label} client") from exc

        async def close() -> None:
            with anyio.CancelScope(shield=True):
                await ctx.__aexit__(None, None, None)

        stack.push_async_callback(close)
        _hooks(client, bucket)
        return client

    return opener


async def _open_lean(
    bucket: Bucket, side: Side, reach: Reach, pool: int, sessions: Sessions, stack: contextlib.AsyncExitStack
) -> None:
    """Reach the bucket as `lean_reach` resolved it: HeadBucket on the lean path, no SDK imported."""
    context: ssl.SSLContext | None = None
    if reach.ca is not None:  # https only: an http endpoint makes no SSL context
        context = ca_context(reach.ca, from_env=bool(os.environ.get("AWS_CA_BUNDLE")))
    region = reach.region
    for _attempt in range(2):
        if bucket.wire is not None:
            bucket.wire.pool.close()
        bucket.region = region
        bucket.wire = Wire(
            Pool(reach.hostname, reach.port, context, read_timeout=side.read_timeout, max_idle=pool),
            Signer(region),
            reach.keys,
            reach.host,
            f"{reach.path}/{bucket.name}",
        )
        bucket.wire.expected_owner = side.expected_owner
        bucket.wire.request_payer = side.request_payer
        bucket.opener = _client_opener(bucket, sessions, side, region, pool, stack, reach.keys)
        actual = await bucket.check_access()
        if actual and actual != region and not side.region:
            region = actual
            continue  # again, signed for the bucket's region
        if actual and actual != region:
            raise _wrong_region(side, bucket.label, actual, region)
        return
    raise UserError(f"cannot settle the region of {bucket.label} bucket s3://{side.url.bucket}")


async def _open_with_botocore(
    bucket: Bucket, side: Side, pool: int, sessions: Sessions, stack: contextlib.AsyncExitStack
) -> None:
    """Reach the bucket where botocore resolves it: its client checks the bucket, then the lean path is set up."""
    session = sessions.get(side.profile)
    region = side.region or session.region_name or "us-east-1"
    for _attempt in range(2):
        attempt = contextlib.AsyncExitStack()
        await stack.enter_async_context(attempt)
        bucket.client, bucket.region = None, region
        bucket.opener = _client_opener(bucket, sessions, side, region, pool, attempt)
        client = await bucket.botocore()
        actual = await bucket.check_access()
        if actual and actual != region and not side.region:
            region = actual
            await attempt.aclose()  # reopen in the bucket's region
            continue
        if actual and actual != region:
            raise _wrong_region(side, bucket.label, actual, region)
        if side.lean:
            bucket.wire = await _open_wire(session, client, bucket.name, pool, side.read_timeout)
            if bucket.wire is not None:
                bucket.wire.expected_owner = side.expected_owner
                bucket.wire.request_payer = side.request_payer
        return
    raise UserError(f"cannot settle the region of {bucket.label} bucket s3://{side.url.bucket}")


EMPTY_MD5 = "1B2M2Y8AsgTpgAmY7PhCfg=="  # base64 of the MD5 of no bytes


def lock_content_md5(request: Any, **_: Any) -> None:
    """botocore's before-sign hook of CopyObject: a copy carrying Object Lock settings also carries the
    Content-MD5 of its (empty) body, which S3 requires of an upload with Object Lock settings (S3 API
    reference, PutObject: "The Content-MD5 or x-amz-sdk-checksum-algorithm header is required for any
    request to upload an object with a retention period configured using Amazon S3 Object Lock") and moto
    requires of a copy too. Correct for any request without a body."""
    h = request.headers
    if any(k.lower().startswith("x-amz-object-lock-") for k in h) and "Content-MD5" not in h and not request.body:
        h["Content-MD5"] = EMPTY_MD5


def request_payer_header(request: Any, **_: Any) -> None:
    """botocore's before-sign hook of a Requester Pays run: `x-amz-request-payer: requester` on every
    request, signed ("For DELETE, GET, HEAD, POST, and PUT requests, include x-amz-request-payer :
    requester in the header", S3 User Guide, "Downloading objects from Requester Pays buckets"). A header
    rather than the RequestPayer parameter, which some requests' models lack (HeadBucket,
    GetBucketVersioning, GetObjectLockConfiguration)."""
    request.headers["x-amz-request-payer"] = "requester"


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
    from urllib.request import getproxies, proxy_bypass

    if url.scheme in getproxies() and not proxy_bypass(url.hostname):
        return None
    credentials = await session.get_credentials()  # the session's one credentials object, the client's too
    if credentials is None:
        return None
    context = None
    default_port = 443 if url.scheme == "https" else 80
    if url.scheme == "https":
        import ssl

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
