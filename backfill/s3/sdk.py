"""The SDK side of the S3 package: aioboto3 sessions, the one botocore client factory, its retry policy.

Imported only by what needs botocore (connect.py imports it inside functions): aioboto3,
aiobotocore and aiohttp cost about 0.3 s of CPU to import, and a plain copy from an
explicit endpoint with credentials in the environment never needs them (connect.py's
lean resolution). Everything else — profiles, SSO, assume-role, AWS's own endpoints,
and the requests that are not on the lean path — comes here.

An S3 client, whoever uses it (the buckets of a run, the state location of a
multi-shard job, `backfill setup`), has one retry policy: botocore's retries are off
and so is aiohttp's silent resend, and its requests are retried by pacing.Pacer,
which looks for a write whose answer was lost before it sends it again. IAM, STS,
SNS and EventBridge clients (setup only) keep the SDK's standard retries: their few
calls are idempotent reads and puts, and setup maps botocore's own exceptions.

An S3 client addresses buckets path-style when an endpoint is configured (local and
S3-compatible servers rarely do virtual hosts).
"""

from __future__ import annotations

import os
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from botocore.httpsession import get_cert_path

from backfill.errors import classify
from backfill.s3.http1 import ca_context


class _NoResendSession(AIOHTTPSession):  # type: ignore[misc]  # aiobotocore has no type hints
    """aiobotocore's HTTP session, with aiohttp's silent second attempt switched off.

    aiohttp sends a PUT or DELETE again, once, by itself, when a reused
    connection drops before the answer (HTTP calls those methods idempotent).
    S3's CopyObject and DeleteObject are not: a copy sent again after the first
    one landed leaves a second version in the replica, and a conditional write
    sent again is refused because of our own first one. Retries are Pacer's,
    which first looks for the lost write (Pacer.run's `landed`).
    """

    def _get_ssl_context(self) -> Any:
        # botocore's context (create_urllib3_context) leaves check_hostname off because urllib3
        # matches host names itself; aiohttp does not, so without this a certificate of any other
        # host signed by a trusted CA would be accepted (aiobotocore 2.25, aiohttp 3.14; seen in
        # tests/test_tls.py::test_certificate_problems_are_one_line_and_write_nothing[hostname-mismatch-botocore]).
        context = super()._get_ssl_context()
        context.check_hostname = True
        return context

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
    keys: Any = None,
) -> Any:
    """The one client factory: a client of `service` to enter with `async with`.

    `region` None: the profile's. `endpoint_url` None: botocore's own resolution
    (AWS_ENDPOINT_URL_<SERVICE>, AWS_ENDPOINT_URL, the config file); given, S3 is
    addressed path-style. `keys` (access_key, secret_key, token): credentials
    already resolved for this side (connect.py's lean resolution), used as they
    are; None: the session's. Certificates: botocore's (AWS_CA_BUNDLE,
    ca_bundle), which the lean path also uses (ca_file). An S3 client never
    retries by itself: run its requests through a Pacer.
    """
    check_ca_bundle(session)
    config = _botocore_config(
        service,
        path_style=bool(endpoint_url),
        pool=pool,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    explicit: dict[str, Any] = {}
    if keys is not None:
        explicit = {
            "aws_access_key_id": keys.access_key,
            "aws_secret_access_key": keys.secret_key,
            "aws_session_token": keys.token,
        }
    return session.client(service, region_name=region, endpoint_url=endpoint_url, config=config, **explicit)


def ca_file(session: aioboto3.Session) -> str:
    """The certificates botocore verifies HTTPS with: AWS_CA_BUNDLE, the profile's ca_bundle, or its own."""
    configured = os.environ.get("AWS_CA_BUNDLE") or session._session.get_config_variable("ca_bundle")
    return str(configured or get_cert_path(True))


def check_ca_bundle(session: aioboto3.Session) -> None:
    """A configured CA bundle that cannot be used is one line now, not a failure per request later."""
    from_env = bool(os.environ.get("AWS_CA_BUNDLE"))
    path = os.environ.get("AWS_CA_BUNDLE") or session._session.get_config_variable("ca_bundle")
    if path:
        ca_context(str(path), from_env=from_env)


def new_session(profile: str | None) -> aioboto3.Session:
    """An aioboto3 session of a named profile (None: the default credentials chain); UserError for a bad profile."""
    try:
        return aioboto3.Session(profile_name=profile)
    except Exception as exc:
        raise classify(exc, what="profile") from exc
